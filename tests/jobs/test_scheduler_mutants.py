"""Tests that kill the scheduler mutants the older tests let live (README, Mutation testing)."""

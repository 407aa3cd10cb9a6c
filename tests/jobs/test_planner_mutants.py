"""Tests that kill the planner mutants the older tests let live (README, Mutation testing)."""

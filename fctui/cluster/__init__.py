"""Several proxies, one queue: fctui's cluster on NATS JetStream (``fctui agent --cluster nats://...``).

Without ``--cluster`` nothing here is used and a single machine works exactly as before (the local agent,
its socket, a repository directory). With it, any number of agents ("proxies") on any number of machines
share one work queue and one repository (normally on S3: ``--repo s3://bucket/prefix``), and any console or
CLI pointed at the same NATS sees every job live, whichever proxy runs it. No proxy is special.

What lives in NATS (names in :mod:`fctui.cluster.layout`):

* stream ``FCTUI_WORK`` (work-queue retention, subjects ``fctui.work.job`` and ``fctui.work.vm``), one
  durable pull consumer ``proxies`` shared by every agent. A submitted job is one *job item*; the proxy
  that takes it logs in, resolves the targets, writes the job's VM records and publishes one *VM item*
  per VM to back up. Each VM item is taken by one proxy. While it works the proxy tells JetStream it is
  in progress (``in_progress()`` every ``ack_wait/3``); it acks only when the VM is final. A proxy that
  dies stops doing so: after ``ack_wait`` the item goes to another proxy.
* key-value bucket ``FCTUI_JOBS`` (history 1): ``job.<job id>`` the job header, ``vm.<job id>.<vm key>``
  one record per VM (its :class:`~fctui.jobs.model.VmProgress`, its proxy, its attempt, and its journal
  of intents: what it created or is about to create on the VRM), ``chain.<volume key>`` CBT chain
  marks (the planner's "next backup of this disk is full, because ..."). Several proxies write the
  records of one job, each only its VMs' records; the job header changes by compare-and-set.
* key-value bucket ``FCTUI_SLOTS`` whose entries expire (``max_age = slot_ttl``): ``host.<host key>.<n>``
  and ``ds.<datastore key>.<n>``, n < 8 (the product document's 8 backup connections per host and 8
  volumes per target datastore). Taking a slot is creating a free key (create fails when it exists);
  the holder renews it every ``slot_ttl/3``; releasing deletes it. A dead proxy's slots come back when
  they expire. The value names the work item that holds it, so the proxy that takes over a dead
  proxy's VM item adopts its slots (and its leftovers on the VRM) instead of racing for new ones.
* key-value bucket ``FCTUI_AGENTS`` (entries expire): ``agent.<agent id>`` each live proxy's heartbeat.

A proxy that takes over a VM item whose record holds intents (the previous proxy died mid-VM) first
cleans them up on the VRM with the journal's rules (fctui.jobs.cleanup), marks the CBT chain of the
VM's disks broken when a CBT snapshot was taken, then backs the VM up again.

The code: :mod:`~fctui.cluster.connect` (``Cluster.connect``: the connection, and the stream, consumer
and buckets, created when missing), :mod:`~fctui.cluster.slots` (``ClusterScheduler``: the engine's
scheduler on slot keys, and VM claims), :mod:`~fctui.cluster.jobs` (``ClusterJobs``: job headers, VM
records, settling, the watch, chain marks; ``VmRecordWriter``: the one writer of a VM record on a
proxy), :mod:`~fctui.cluster.journal` (``KvJournal``: the runner's journal in the VM record).

VRM passwords never travel through NATS: each proxy reads its own (``fctui agent --cluster`` takes the
VRM and user of a profile and the password file of the unattended service, as ``--service`` does).
"""

"""The replicated state machine: what every node applies, in log order, to the same state.

Deterministic (no clock but the command's, no randomness, no I/O, no logging) and bounded;
schedb.fsm.machine states the rules. Imports point down this list only, and out of the
package only to the pure helpers schedb.commands, schedule, jobspec, report and retry
(tests/unit/test_layering.py checks both):

  model, fires, slots, limits,   records and names; the fire book, the time slots, the bounds
  misfire, replicated_time       and quotas, the misfire policies, whose time a command gets
  core                           the State: every field, and the primitives on them
  history, tenancy, nodes,       execution records; teams (keys, quotas, secrets, audit); nodes;
  settings                       SetLimits
  workflow                       job dependencies and runs; every fire starts and ends here
  dead_letters, occurrences,     the life of a fire: dead letters; decided and missed occurrences
  assign, complete               and withdrawals; AssignFires; CompleteFires
  jobs, registry                 job commands; service-registered jobs
  upgrade, machine               older snapshots; apply, the handler table, canonical bytes
  invariants, snapshot_compat    the state's invariants as code; old snapshots' class paths
  queries, job_list,             the read port: named queries the node's other parts run through
  feed_queries                   Replica.read (copies only); the job list; the console's feed

Nothing is imported here: importing schedb.fsm.limits (as schedb.config does) loads no handler.
"""

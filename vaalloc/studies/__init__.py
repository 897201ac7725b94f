"""Studies on the Xen model: workloads that drive it, and the comparison of the p2m lookup
strategies the xen-devel thread argues about.

A study returns numbers (ledger counts, cycles, crossovers), never text: the command
(:mod:`vaalloc.cli`) lays them out as tables and charts. :mod:`vaalloc.studies.workload` is the
seeded workload model; :mod:`vaalloc.studies.compare` prices what each strategy did.
"""

from __future__ import annotations

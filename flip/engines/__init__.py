"""Engines other than ``engine=local``: where clients train when not in this process one after
another (ENGINES.md §3, §4). Each plugs into the executor seam of
:mod:`flip.federation.executor`; none re-implements an algorithm."""

# Developer shortcuts; each mirrors a command in the README.

# build one or more targets (e.g. `just build ci`)
build +TARGETS:
    python -m imagefactory build {{TARGETS}}

# the whole test suite, as CI runs it
test:
    python -m pytest -n 2 --dist loadgroup

# fast tests only: no image builds, no fault injection, no test users (see docs/testing.md)
unit:
    python -m pytest -n 2 -m "not e2e and not slow and not faults and not rootless"

# end-to-end image builds and runs, in one shared private store
e2e:
    python -m pytest -m e2e

lint:
    ruff check imagefactory recipes tests bench

# imagefactory against the equivalent Containerfile (see README, Performance)
bench:
    python bench/bench.py

# bit-for-bit: two cold builds of ci and s4 in temporary stores must give the same image IDs
reproduce:
    python -m imagefactory reproduce ci s4 --report reports/reproduce.json

setup:
    ci/setup

# fault injection: killed builds, concurrent runs, flaky mirrors, bad input, secrets, full disk
faults:
    python -m pytest -n 2 --dist loadgroup -m faults

# the factory as an ordinary user (as root: creates the test users), see docs/rootless.md
rootless:
    python -m pytest -m rootless

# the cost of rootless builds (as root: creates a test user), see docs/rootless.md
bench-rootless:
    python bench/rootless.py

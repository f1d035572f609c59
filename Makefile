# Rampart: build, test and demo entry points. `make help` lists them; README.md explains them.
#
# Tests run in three passes, each only when the previous one passed:
#   test-unit  unit tests of every crate and of the binary (--lib --bins), in parallel;
#   test-doc   doctests;
#   test-e2e   integration tests (tests/*.rs of every package), ONE AT A TIME: each e2e test
#              starts its own etcd and PostgreSQL cluster on loopback ports.
# cargo-nextest is used when installed (one process per test, per-test timeouts, see
# .config/nextest.toml); otherwise plain `cargo test` with --test-threads=1 for the e2e pass.
# Before and after the tests, scripts/reap-test-procs.sh stops processes of e2e tests that were
# killed before their own clean-up could run.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# Extra arguments for every test pass, e.g. `make test TEST_ARGS='failover'` (a name filter).
TEST_ARGS ?=
# `auto`: nextest when `cargo nextest` works; `yes`/`no` to force.
USE_NEXTEST ?= auto
ifeq ($(USE_NEXTEST),auto)
  NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes || echo no)
else
  NEXTEST := $(USE_NEXTEST)
endif
NEXTEST_PROFILE ?= default

export RUST_BACKTRACE ?= 1

# The test passes must run one after the other even under `make -j`.
.NOTPARALLEL:

.PHONY: help setup build release demo test test-unit test-doc test-e2e bench chaos check reap deb fresh-check acceptance

help:
	@echo 'make demo    set up, build the release binary, run `rampart demo`'
	@echo 'make test    set up, build and run every test (unit, doc, e2e serially, then 3 scenarios on a 3-member etcd)'
	@echo 'make chaos   the long fault-injection run (200 faults, summary table; see tests/chaos/main.rs)'
	@echo 'make check   cargo fmt --check and clippy'
	@echo 'make bench   benchmarks: failover/switchover windows, agent footprint, proxy TPS and failover, r/w splitting, replica creation, etcd load'
	@echo 'make setup   install system packages, the postgres user and the Patroni venv'
	@echo 'make reap    stop processes and remove directories left by killed e2e tests'
	@echo 'make deb     the Debian package (cargo-deb): target/debian/rampart_<version>_<arch>.deb'
	@echo 'make fresh-check  as root: setup, build and demo in a clean Debian 12 root, then the .deb in another'
	@echo 'make acceptance   as root: Patroni 4.1.4'"'"'s behave suite against rampart agent (ACCEPTANCE_ARGS=--agent both ...)'

setup:
	bash scripts/setup.sh

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release

demo: setup release
	target/release/rampart demo

test: setup
	@bash scripts/reap-test-procs.sh
	@rc=0; $(MAKE) --no-print-directory test-unit test-doc test-e2e test-e2e-etcd3 || rc=$$?; \
	  bash scripts/reap-test-procs.sh; \
	  if [[ $$rc -eq 0 ]]; then echo 'make test: all test passes succeeded'; \
	  else echo "make test: FAILED (exit $$rc)" >&2; fi; \
	  exit $$rc

ifeq ($(NEXTEST),yes)
test-unit:
	$(CARGO) nextest run --profile $(NEXTEST_PROFILE) --workspace --lib --bins --no-tests=fail $(TEST_ARGS)

test-e2e:
	$(CARGO) nextest run --profile $(NEXTEST_PROFILE) --workspace -E 'kind(test)' --test-threads 1 --no-tests=fail $(TEST_ARGS)

test-e2e-etcd3:
	RAMPART_ETCD_MEMBERS=3 $(CARGO) nextest run --profile $(NEXTEST_PROFILE) $(ETCD3_SCENARIOS:%=--test %) --test-threads 1 --no-tests=fail $(TEST_ARGS)
else
test-unit:
	$(CARGO) test --workspace --lib --bins $(if $(TEST_ARGS),-- $(TEST_ARGS))

test-e2e:
	$(CARGO) test --workspace --test '*' -- --test-threads=1 $(TEST_ARGS)

test-e2e-etcd3:
	RAMPART_ETCD_MEMBERS=3 $(CARGO) test $(ETCD3_SCENARIOS:%=--test %) -- --test-threads=1 $(TEST_ARGS)
endif

# Run again on a three-member etcd by `make test` (every test can be: RAMPART_ETCD_MEMBERS=3):
# bootstrap, crash failover and fencing (every etcd member killed or frozen).
ETCD3_SCENARIOS := bootstrap failover fencing

# The benchmarks are not run by `make test`, but they share the e2e harness: compiling them here
# (a few seconds) keeps them from breaking unnoticed.
test-doc:
	$(CARGO) test --workspace --doc $(if $(TEST_ARGS),-- $(TEST_ARGS))
	$(CARGO) check --benches

# The failover, switchover, proxy throughput, relay floor, proxy failover, read/write splitting,
# replica creation and etcd load benchmarks (bench/failover.rs, bench/switchover.rs,
# bench/proxy.rs, bench/relay_floor.rs, bench/proxy_failover.rs, bench/rw_split.rs,
# bench/clone.rs, bench/etcd_load.rs, bench/many_clusters.rs: `harness = false` bench targets
# sharing bench/common/): they print numbers and assert nothing. `cargo bench` builds them and the
# agent with the bench profile (= release). About 6 + 1.5 + 16 + 8 + 1.5 + 12 + 6 + 12 + 25 minutes;
# `make bench RAMPART_BENCH_QUICK=1` (one run of each kind, short pgbench runs) about
# 2 + 1 + 4 + 2 + 0.5 + 3 + 1 + 4 + 9. The proxy, rw_split and clone benches also read RAMPART_BENCH_ROUNDS,
# the first two RAMPART_BENCH_SECS, clone RAMPART_BENCH_SCALE (see bench/proxy.rs,
# bench/rw_split.rs, bench/clone.rs).
# Like `make test`, it clears leftovers of killed runs before and after each bench.
bench: setup
	@bash scripts/reap-test-procs.sh
	@rc=0; for b in failover switchover proxy relay_floor proxy_failover rw_split clone etcd_load many_clusters; do \
	  $(CARGO) bench --bench $$b || rc=$$?; \
	  bash scripts/reap-test-procs.sh; \
	done; exit $$rc

# The long fault-injection run (tests/chaos, `long_profile`): RAMPART_CHAOS_FAULTS faults (default
# 200) of every kind, in RAMPART_CHAOS_MODE (quorum, on or off; default quorum); RAMPART_CHAOS_SEED
# repeats a run. About 14 s per fault (200 took 45 min here); prints the schedule first and a
# summary table at the end.
# It runs a copy of the agent binary, so the tree can be rebuilt while it runs.
# RAMPART_CHAOS_TTL=5 runs it at ttl 5 (loop_wait 1, retry_timeout 2) instead of 10 (1, 3).
# `make test` runs the short profile (9 faults) with the other e2e tests.
chaos: setup
	@bash scripts/reap-test-procs.sh
	$(CARGO) test --test chaos --no-run
	@bin=$$(mktemp /tmp/rampart-chaos-bin.XXXXXX); cp target/debug/rampart "$$bin"; chmod 755 "$$bin"; \
	  rc=0; RAMPART_TEST_BIN="$$bin" $(CARGO) test --test chaos -- --ignored --nocapture --exact long_profile || rc=$$?; \
	  rm -f "$$bin"; bash scripts/reap-test-procs.sh; exit $$rc

check:
	$(CARGO) fmt --all -- --check
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
	  echo '$(CARGO) clippy --workspace --all-targets -- -D warnings'; \
	  $(CARGO) clippy --workspace --all-targets -- -D warnings; \
	else echo 'make check: clippy is not installed; skipped'; fi

reap:
	bash scripts/reap-test-procs.sh

# The Debian package (cargo-deb, configured in Cargo.toml's [package.metadata.deb]): the release
# binary, the systemd units and examples from packaging/, and man pages and completions the binary
# generates from its own clap definitions (into target/release/generated/, where the assets point).
GEN := target/release/generated
deb: release
	@$(CARGO) deb --version >/dev/null 2>&1 || { echo 'installing cargo-deb'; $(CARGO) install cargo-deb --locked; }
	rm -rf $(GEN)
	target/release/rampart generate-man $(GEN)/man
	gzip -9nf $(GEN)/man/*.1
	mkdir -p $(GEN)/completions
	target/release/rampart completion bash > $(GEN)/completions/rampart.bash
	target/release/rampart completion zsh > $(GEN)/completions/_rampart
	target/release/rampart completion fish > $(GEN)/completions/rampart.fish
	$(CARGO) deb --no-build --output target/debian/

# Not part of `make test` (about 15-30 minutes, needs root and Debian's mirror): scripts/setup.sh,
# the release build and `rampart demo` (list, SQL, Ctrl-C) in a clean debootstrapped Debian 12
# root, then the package from `make deb` installed in another one. See scripts/fresh-check.sh.
fresh-check: deb
	bash scripts/fresh-check.sh all

# Not part of `make test` (about 15-25 minutes for the ten features; twice that with
# `--agent both`): Patroni 4.1.4's own behave acceptance suite, kept outside this repository in
# ../shared/reference/patroni-acceptance/features (third-party; PATRONI_FEATURES points elsewhere),
# run with `rampart agent` started in place of `patroni` (scripts/acceptance.py says how, and
# what it does not change). It uses the suite's fixed ports (etcd 2379, REST 8008-8011,
# PostgreSQL 5361-5370) and refuses to start when one is taken. Examples:
#   make acceptance ACCEPTANCE_ARGS='--agent both basic_replication'
#   make acceptance ACCEPTANCE_ARGS='--slow'   (the suite's own CI setting: timeouts x5)
ACCEPTANCE_ARGS ?=
acceptance: release
	python3 scripts/acceptance.py $(ACCEPTANCE_ARGS)

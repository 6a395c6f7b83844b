# Panal's tasks. `scripts/setup.sh` installs what is missing (just, the wasm toolchain).
set shell := ["bash", "-euo", "pipefail", "-c"]

# Build everything and run the shop on embedded defaults (panal.toml).
default: run

# Host and every component.
build: host components

# The `panal` binary (release: `run` and `test` share one build).
host:
    cargo build --release -p panal

# Every crate under components/ for wasm32-wasip2 (picks the toolchain route itself),
# then the components in other languages (the shipping service in Python, the samples).
components:
    scripts/build-components.sh
    scripts/guests.sh

# Serve panal.toml on 127.0.0.1:8080 (admin 127.0.0.1:8081); extra args go to `panal run`.
run *ARGS: build
    ./target/release/panal run {{ARGS}}

# The shop on three hosts over a 3-server NATS cluster (JetStream, R3) with PostgreSQL
# storage: host 1 runs all but product, hosts 2 and 3 run product (README: Scale out).
cluster: build
    scripts/cluster.sh

# The shop on three hosts, three NATS servers and PostgreSQL, every link behind a proxy,
# under a seeded schedule of partitions, pauses, kills and restarts, deploys and rollbacks;
# then every invariant checked and a summary table printed (README: Faults and what Panal
# promises). MINUTES defaults to 30; SEED to the clock's (printed, for replaying).
# Faults across the cluster for MINUTES from SEED, then the shop's invariants checked.
chaos MINUTES="30" SEED="": build
    cargo build --release -p panal-tests --bins
    ./target/release/chaos {{MINUTES}} {{SEED}}

# Serve with `--watch` and rebuild components on source change; each rebuilt one is redeployed.
dev *ARGS: build
    scripts/dev.sh {{ARGS}}

# Validate panal.toml and compile and link every component without serving.
check: build
    ./target/release/panal check

# The whole test suite: host, gateway, end to end against the real binary, components.
test: build
    cargo test --release --workspace --no-fail-fast
    cd components && cargo test --workspace --no-fail-fast
    python3 -m unittest discover -s components/shipping

# Panal beside `wasmtime serve` and native hyper under wrk, as ratios; rewrites the
# generated part of BENCHMARKS.md and docs/benchmarks.png. Then the criterion micro-benches.
bench: build
    scripts/bench-tools.sh
    cargo build --release -p panal-tests --bins
    cargo run --release -p panal-tests --bin bench
    cargo bench -p panal --bench instance

# Fuzz the manifest parser and the router for SECONDS each (cargo-fuzz, nightly).
fuzz SECONDS="60":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    cd fuzz && cargo +nightly fuzz run -O manifest -- -max_total_time={{SECONDS}}
    cd fuzz && cargo +nightly fuzz run -O router -- -max_total_time={{SECONDS}}

# Formatting and lints, as CI wants them.
lint:
    cargo fmt --all --check
    cargo clippy --release --workspace --all-targets -- -D warnings
    cd components && cargo fmt --all --check

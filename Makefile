# The project's entry points. Every target bootstraps libtorch into .venv first (idempotent,
# under a second when it is already there).

CARGO ?= cargo

.PHONY: bootstrap build test lint

bootstrap:
	@scripts/bootstrap.sh

## build: the release binary at target/release/imagen
build: bootstrap
	$(CARGO) build --release --bin imagen
	@echo "built target/release/imagen"

## test: formatting, clippy -D warnings and the whole workspace's tests (what CI runs)
test: bootstrap lint
	$(CARGO) test --workspace

lint: bootstrap
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

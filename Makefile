# The project's entry points. Every target bootstraps libtorch into .venv first (idempotent,
# under a second when it is already there).

CARGO ?= cargo

.PHONY: bootstrap tools build test lint demo

bootstrap:
	@scripts/bootstrap.sh

# Python tools that some tests read the project's output with (TensorBoard's reader,
# safetensors, pyarrow) in .venv-tools; the fixture generators' reference tools (transformers,
# pytorch-fid) are `scripts/python_env.sh text|eval|data`.
tools: bootstrap
	@scripts/python_env.sh

## build: the release binary at target/release/imagen
# (bootstrap included: on a fresh machine the crates that need no libtorch compile meanwhile)
build:
	@CARGO="$(CARGO)" scripts/build.sh

## test: formatting, clippy -D warnings and the whole workspace's tests (what CI runs)
test: tools lint
	$(CARGO) test --workspace

lint: bootstrap
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## demo: synthetic data, demo T5, train both tiny stages on CPU, sample a grid (README's demo)
demo:
	@scripts/demo.sh

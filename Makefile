# The user's entry point. `make run` trains the seed model; `make test` runs every test.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
# Seconds per step (setup, configure, build, npm-tools, tests), printed at the end.
TIMINGS = $(BUILD_DIR).timings

.PHONY: setup configure build run test bench fuzz clean

setup:
	@rm -f $(TIMINGS)
	@scripts/step $(TIMINGS) setup scripts/setup

configure: setup
	@scripts/step $(TIMINGS) configure sh -c 'cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  $(CMAKE_FLAGS) > $(BUILD_DIR).configure.log 2>&1 || { cat $(BUILD_DIR).configure.log; exit 1; }'

build: configure
	@scripts/step $(TIMINGS) build cmake --build $(BUILD_DIR) -j $(JOBS)
	@scripts/step $(TIMINGS) --summary

# The main job: the seed model (FashionMNIST MLP) as a 2-worker job on the
# embedded cluster (a head and a local agent in one process). The results
# (model.pt, metrics.json) and checkpoints land in build/run/results/<job id>/,
# the cluster's state (logs, reports) in build/run/state/.
# It builds only what it runs (the CLI and the trainer), not the tests.
run: configure
	@scripts/step $(TIMINGS) build cmake --build $(BUILD_DIR) -j $(JOBS) --target cohort fashion_mnist
	@scripts/step $(TIMINGS) --summary
	@rm -rf $(BUILD_DIR)/run
	$(BUILD_DIR)/bin/cohort run --workers 2 --max-failures 2 --state-dir $(CURDIR)/$(BUILD_DIR)/run/state \
	  --results-dir $(BUILD_DIR)/run/results -- $(BUILD_DIR)/bin/fashion_mnist

test: build
	@scripts/step $(TIMINGS) npm-tools scripts/npm_tools
	@rc=0; scripts/step $(TIMINGS) tests sh -c 'cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600' \
	  || rc=$$?; scripts/step $(TIMINGS) --summary; exit $$rc

bench: build
	bench/allreduce.sh
	bench/train.sh
	bench/control_plane.sh
	bench/storage.sh
	bench/chaos.sh

# The libFuzzer targets (fuzz/, docs/fuzzing.md), each for FUZZ_SECONDS, in a
# separate clang tree ($(BUILD_DIR)/fuzz). FUZZ_TARGETS= picks some; new inputs
# stay in the build tree unless FUZZ_MERGE=1 merges them into fuzz/corpus/.
FUZZ_SECONDS ?= 300
FUZZ_TARGETS ?=
FUZZ_MERGE ?=
fuzz: setup
	COHORT_FUZZ_BUILD_DIR=$(CURDIR)/$(BUILD_DIR)/fuzz fuzz/run.sh $(if $(FUZZ_MERGE),--merge) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR).configure.log $(TIMINGS)

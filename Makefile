# The user's entry point. `make run` trains the seed model; `make test` runs every test.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: setup configure build run test bench clean

setup:
	@scripts/setup

configure: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) > $(BUILD_DIR).configure.log 2>&1 \
	  || { cat $(BUILD_DIR).configure.log; exit 1; }

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# The main job: the seed model (FashionMNIST MLP), 2 ranks on this machine.
# Per-epoch metrics also go, as JSON lines, to $(BUILD_DIR)/run/metrics.jsonl.
run: build
	@mkdir -p $(BUILD_DIR)/run
	COHORT_REPORT_PATH=$(CURDIR)/$(BUILD_DIR)/run/metrics.jsonl \
	  $(BUILD_DIR)/bin/cohort launch -n 2 -- $(BUILD_DIR)/bin/fashion_mnist \
	  --checkpoint-dir $(BUILD_DIR)/run/checkpoints --results-dir $(BUILD_DIR)/run/results

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

bench: build
	bench/allreduce.sh
	bench/train.sh

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR).configure.log

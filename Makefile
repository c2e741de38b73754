# The two commands the README opens with, and a few more for developers.
#   make run    install deps, build, start packtrackd on 127.0.0.1:7000 (data in ./var)
#   make test   install deps, build, run every test
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
LISTEN     ?= 127.0.0.1:7000
DATA       ?= ./var

.PHONY: all deps build run test test-asan fuzz bench chaos clean

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPT_TESTS=ON -DPT_BENCH=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	mkdir -p $(DATA)
	$(BUILD)/packtrackd --listen $(LISTEN) --data $(DATA)

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPT_TESTS=ON -DPT_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

fuzz: deps
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DPT_FUZZ=ON -DPT_TESTS=OFF >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)

# Reliability and adversary campaigns (docs/RELIABILITY.md): about 15 minutes,
# one table, then the spin model. SEED=N replays a run; CHAOS_ARGS adds
# chaos_run options. Fails if either finds a defect.
chaos: build
	@rc=0; $(BUILD)/tests/chaos_run $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS) || rc=1; \
	  echo; bash scripts/chaos-model.sh || rc=1; exit $$rc

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b; done

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

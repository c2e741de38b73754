# The two commands the README opens with, and a few more for developers.
#   make run    install deps, build, start packtrackd on 127.0.0.1:7000 (data in ./var)
#   make test   install deps, build, run every test
#   make install [PREFIX=/usr/local] [DESTDIR=/tmp/stage]   binaries, libpacktrack + packtrack.pc,
#               packtrack.h, the systemd unit, an example config and the man pages
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc)
LISTEN     ?= 127.0.0.1:7000
DATA       ?= ./var
PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all deps build run test test-asan fuzz bench chaos timing clean install man

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

# Reliability and adversary campaigns (docs/RELIABILITY.md): about 18 minutes,
# one table, then the spin model. SEED=N replays a run; CHAOS_ARGS adds
# chaos_run options. Fails if either finds a defect.
chaos: build
	@rc=0; $(BUILD)/tests/chaos_run $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS) || rc=1; \
	  echo; bash scripts/chaos-model.sh || rc=1; exit $$rc

# dudect-style leakage test of the secret comparisons: 10^6 measurements per target,
# |t| < 4.5 expected, and the libc-memcmp control must show up (docs/RELIABILITY.md)
timing: build
	$(BUILD)/tests/pt-dudect $(if $(N),--measurements $(N))

bench: build
	@for b in $(BUILD)/bench/bench_*; do echo "== $$b"; $$b; done

# Builds what is missing in $(BUILD) (configuring it first if needed), then installs.
install:
	@test -f $(BUILD)/CMakeCache.txt || $(MAKE) --no-print-directory build
	cmake --build $(BUILD) -j $(JOBS)
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

# Regenerates the roff man pages from their markdown sources (pandoc; scripts/deps.sh).
man:
	python3 scripts/man.py

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)

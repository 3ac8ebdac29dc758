VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TOOLS := $(VENV)/tools
PROMETHEUS := $(TOOLS)/usr/bin/prometheus

.PHONY: install demo test bench lint up down clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Prometheus + promtool for tests/observability: Debian's package unpacked into the venv
# (no root, nothing installed system-wide). Where apt cannot fetch it those tests skip.
$(PROMETHEUS):
	-mkdir -p $(TOOLS) && cd $(TOOLS) && apt-get download -q prometheus >/dev/null 2>&1 \
		&& dpkg -x prometheus_*.deb . && rm -f prometheus_*.deb

install: $(STAMP) $(PROMETHEUS)

demo: $(STAMP)
	$(VENV)/bin/facespeech demo $(if $(VIDEO),--video $(VIDEO)) $(if $(AUDIO),--audio $(AUDIO))

test: $(STAMP) $(PROMETHEUS)
	$(PY) -m pytest -q -ra

bench: $(STAMP)
	$(PY) -m bench.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check shared tests bench
	$(VENV)/bin/mypy shared/facespeech/api shared/facespeech/db shared/facespeech/storage shared/facespeech/jobs

up:
	docker compose up -d --build

down:
	docker compose down

clean:
	rm -rf $(VENV) .facespeech

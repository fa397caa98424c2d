# The two set-up commands of the README. Each makes its own virtual environment.
PYTHON ?= python3
PIP_FLAGS = -q --disable-pip-version-check -c constraints.txt

.PHONY: demo test clean

# install with every CPU backend and adapter, then check them all against the reference
demo:
	$(PYTHON) -m venv .venv-demo
	.venv-demo/bin/pip install $(PIP_FLAGS) -e ".[numba,torch,jax]"
	.venv-demo/bin/pdscan validate

# install with the test extras, then run the whole test suite
test:
	$(PYTHON) -m venv .venv-test
	.venv-test/bin/pip install $(PIP_FLAGS) -e ".[all]"
	.venv-test/bin/python -m pytest

clean:
	rm -rf .venv-demo .venv-test build *.egg-info

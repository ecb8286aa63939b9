"""What the Python suites share: building crispd, the grpcio stubs
generated from proto/, and the CRI client helpers of the pod suites.
tests/conftest.py puts tests/ on sys.path, so suites import it as
`common`."""

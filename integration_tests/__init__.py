"""Tests against real Elasticsearch/OpenSearch nodes (see conftest.py)."""

import pytest

pytest.register_assert_rewrite("integration_tests.helpers")

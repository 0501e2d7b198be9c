import pytest
from small_runs import SMALL

from emofuse.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def splits():
    return make_synthetic(SMALL)

"""The scan and backward drivers directly: segments change nothing, a reverse scan is the
forward scan of the reversed sequence, the fused dk/dv kernel with segments equals the scans."""

import pytest
import torch

from lintutor.kernels._common import device
from lintutor.kernels.chunked import chunk_scan
from lintutor.kernels.chunked_bwd import chunk_bwd, dkdv

from reference import assert_close, gen, kernel_inputs, parallel_reference

DEV = device()


@pytest.mark.parametrize("segments", [2, 3])
@pytest.mark.parametrize("reverse", [False, True])
def test_segmented_scan_matches_one_segment_and_reverse_is_flipped(segments, reverse):
    q, k, v, S0 = kernel_inputs(2, 1, 200, 16, 32, torch.float32, DEV, seed=1)
    o, S = chunk_scan(q, k, v, S0, reverse=reverse, output_final_state=True, num_segments=segments)
    if reverse:  # a reverse scan is the forward scan of the time-reversed sequence
        ro, rS = parallel_reference(q.flip(2), k.flip(2), v.flip(2), S0)
        ro = ro.flip(2)
    else:
        ro, rS = parallel_reference(q, k, v, S0)
    assert_close("o", ro, o, rel=1e-5)
    assert_close("S", rS, S, rel=1e-5)


@pytest.mark.parametrize("segments", [2, 3])
def test_fused_dkdv_with_segments_matches_the_scans(segments):
    q, k, v, _ = kernel_inputs(2, 1, 200, 16, 32, torch.float32, DEV, seed=5)
    g = gen(2)
    do = torch.randn(v.shape, generator=g).to(DEV)
    dS = torch.randn(2, 1, 16, 32, generator=g).to(DEV)
    dk, dv, dS0 = dkdv(q, k, v, do, dS, output_dS0=True, chunk_size=16, num_segments=segments)
    _, rk, rv, rS0 = chunk_bwd(q, k, v, do, None, dS, 16, need_dS0=True, backward="scans")
    assert_close("dk", rk, dk, rel=1e-5)
    assert_close("dv", rv, dv, rel=1e-5)
    assert_close("dS0", rS0, dS0, rel=1e-5)


def test_kernel_tests_see_nan_filled_empty_tensors():
    """The conftest fixture is on: a freshly allocated float output is NaN until written."""
    assert torch.empty(4).isnan().all() and torch.empty_like(torch.zeros(2, 3)).isnan().all()
    assert torch.empty(3, dtype=torch.long).shape == (3,)  # integer buffers are left alone

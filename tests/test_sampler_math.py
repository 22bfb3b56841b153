"""Sampler math against independent float64 computations (spec section 4).

The UniPC reference here is written from the paper's definitions (Zhao et al. 2023): phi functions
by numerical quadrature of their integral form, the order conditions solved with numpy, and the
predictor / corrector loop spelled out; the solver is also checked on a Gaussian data distribution,
whose probability-flow ODE has a closed-form solution.
"""
import math

import numpy as np
import pytest
import torch

from framepack_oneframe.framepack_core.sampler import (
    auto_mu,
    effective_shift,
    initial_noise,
    rescale_cfg,
    sigma_schedule,
    unipc_plan,
    unipc_sample,
)


# ------------------------------------------------------------------------------------------------
# Schedule and noise
# ------------------------------------------------------------------------------------------------


def test_auto_shift_640():
    # 640 x 640 -> latent 80 x 80 -> 40 x 40 patches = seq 1600
    mu = 0.5 + (1600 - 256) * 0.65 / 3840
    assert auto_mu(1, 80, 80) == pytest.approx(mu)
    assert effective_shift(0, 80, 80) == pytest.approx(2.0699, abs=1e-3)
    assert effective_shift(3.0, 80, 80) == 3.0


def test_auto_shift_is_capped_at_7():
    assert math.exp(auto_mu(1, 512, 512)) == pytest.approx(7.0)


@pytest.mark.parametrize("steps, shift", [(25, 0.0), (10, 3.0), (1, 0.0)])
def test_sigma_schedule_values(steps, shift):
    sig = sigma_schedule(steps, shift, 80, 80)
    mu = math.log(shift) if shift else 0.5 + (1600 - 256) * 0.65 / 3840
    t = np.linspace(1, 0, steps + 1)
    with np.errstate(divide="ignore"):
        expect = np.exp(mu) / (np.exp(mu) + (1 / t - 1))
    assert sig.dtype == torch.float32 and sig.shape == (steps + 1,)
    np.testing.assert_allclose(sig.numpy(), expect, rtol=1e-6, atol=1e-7)
    assert sig[0] == 1.0 and sig[-1] == 0.0
    assert torch.all(sig[1:] < sig[:-1])


def test_noise_is_cpu_randn_per_seed():
    noise = initial_noise(1234, 3, 6, 10)
    assert noise.dtype == torch.float32 and noise.shape == (3, 16, 1, 6, 10)
    for j in range(3):
        g = torch.Generator("cpu").manual_seed(1234 + j)
        torch.testing.assert_close(noise[j:j + 1], torch.randn((1, 16, 1, 6, 10), generator=g), rtol=0, atol=0)
    # seeds wrap at 2**64 (the seed widget's maximum is 2**64 - 1)
    top = initial_noise(2**64 - 1, 2, 2, 2)
    assert torch.equal(top[1:], initial_noise(0, 1, 2, 2))
    # sample 0 is exactly musubi's single-image noise for the seed
    g = torch.Generator("cpu").manual_seed(1234)
    assert torch.equal(noise[:1], torch.randn((1, 16, 1, 6, 10), generator=g))


# ------------------------------------------------------------------------------------------------
# Independent UniPC (float64, numpy)
# ------------------------------------------------------------------------------------------------


def phi(k: int, z: float) -> float:
    """phi_k(z) = int_0^1 e^{(1-tau) z} tau^{k-1} / (k-1)! dtau, by composite Simpson on 20001 points."""
    tau = np.linspace(0.0, 1.0, 20001)
    f = np.exp((1 - tau) * z) * tau ** (k - 1) / math.factorial(k - 1)
    hstep = tau[1] - tau[0]
    return float(hstep / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))


def reference_unipc(model, x, sigmas, variant):
    """Multistep UniP-p + UniC-p in data-prediction form with alpha = 1, lambda = -log sigma."""
    x = np.array(x, dtype=np.float64)
    n = len(sigmas) - 1
    order = min(3, n - 1)
    ts, ms = [], []
    for i in range(n):
        s = float(sigmas[i])
        if i == 0:
            ts, ms = [s], [model(x, s)]
            continue
        p = min(i, order)
        lam = lambda v: -math.log(v)  # noqa: E731
        h = lam(s) - lam(ts[-1])
        z = -h
        B = z if variant == "bh1" else math.expm1(z)
        # order conditions: sum_m a_m r_m^{j-1} = j! phi_{j+1}(z) z / B, j = 1..p
        r = [(lam(ts[-1 - m]) - lam(ts[-1])) / h for m in range(1, p)] + [1.0]
        g = np.array([math.factorial(j) * phi(j + 1, z) * z / B for j in range(1, p + 1)])
        R = np.array([[rm ** (j - 1) for rm in r] for j in range(1, p + 1)])
        D = [(ms[-1 - m] - ms[-1]) / r[m - 1] for m in range(1, p)]
        base = (s / ts[-1]) * x - (math.exp(z) - 1) * ms[-1]
        if p == 1:
            a_p, a_c = [], [0.5]
        else:
            a_p = [0.5] if p == 2 else np.linalg.solve(R[:-1, :-1], g[:-1])
            a_c = np.linalg.solve(R, g)
        x_pred = base - B * sum((a * d for a, d in zip(a_p, D)), np.zeros_like(x))
        m_t = model(x_pred, s)
        x = base - B * (sum((a * d for a, d in zip(a_c[:-1], D)), np.zeros_like(x)) + a_c[-1] * (m_t - ms[-1]))
        ts.append(s)
        ms.append(m_t)
        ts, ms = ts[-order:], ms[-order:]
    return ms[-1]


def nonlinear_x0(x, s):
    """A smooth, nonlinear stand-in denoiser (works on numpy and torch alike)."""
    lib = torch if isinstance(x, torch.Tensor) else np
    return 0.6 * lib.tanh(x * (1.0 - 0.5 * s)) + 0.1 * s * x + 0.05 * lib.sin(3.0 * x)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 25])
def test_unipc_equals_independent_float64(variant, steps):
    sigmas = sigma_schedule(steps, 0.0, 80, 80).double().tolist()
    x = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    got = unipc_sample(lambda v, i: nonlinear_x0(v, sigmas[i]), x, sigmas, variant=variant)
    ref = reference_unipc(lambda v, s: nonlinear_x0(v, s), x.numpy(), sigmas, variant)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9)
    # float32 run of the same (what the sampler does on device) stays close
    got32 = unipc_sample(lambda v, i: nonlinear_x0(v, sigmas[i]), x.float(), sigmas, variant=variant)
    np.testing.assert_allclose(got32.double().numpy(), ref, rtol=1e-4, atol=1e-5)


def test_unipc_coefficients_order_and_first_step():
    sig = sigma_schedule(25, 0.0, 80, 80).double().tolist()
    order, plan = unipc_plan(sig, "bh1")
    assert order == 3 and plan[0] is None and len(plan) == 25
    assert [len(p.rho_c) for p in plan[1:4]] == [1, 2, 3]  # warm-up orders 1, 2 then 3
    st = plan[1]
    assert st.ratio == pytest.approx(sig[1] / sig[0]) and st.phi1 == pytest.approx(sig[1] / sig[0] - 1)
    assert unipc_plan(sig[:3], "bh2")[0] == 1


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_solves_gaussian_flow(variant):
    """Data ~ N(mu, s^2): x_sigma = (1-sigma) x0 + sigma * eps has the exact ODE solution
    x_sigma = (1-sigma) mu + sqrt((1-sigma)^2 s^2 + sigma^2) * eps, and E[x0 | x] is linear in x."""
    mu, s = 0.7, 0.4

    def x0_hat(x, sig):
        var = (1 - sig) ** 2 * s ** 2 + sig ** 2
        return mu + (1 - sig) * s ** 2 / var * (x - (1 - sig) * mu)

    eps = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    for steps in (20, 40, 80):
        # uniform sigmas down to a fixed 0.1, so every run is compared at the same point
        sig = torch.linspace(1.0, 0.1, steps, dtype=torch.float64).tolist() + [0.0]
        out = unipc_sample(lambda v, i: x0_hat(v, sig[i]), eps.clone(), sig, variant=variant)
        last = sig[-2]
        exact_x = (1 - last) * mu + math.sqrt((1 - last) ** 2 * s ** 2 + last ** 2) * eps
        errors.append((out - x0_hat(exact_x, last)).abs().max().item())
    assert errors[-1] < 1e-4
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] / errors[2] > 8  # third-order solver: halving the step cuts the error ~8-16x


def test_unipc_callback_and_interrupt():
    sig = sigma_schedule(5, 0.0, 8, 8).tolist()
    seen = []
    unipc_sample(lambda v, i: v * 0.5, torch.ones(1, 2), sig, callback=lambda i, x0, x: seen.append(i))
    assert seen == [0, 1, 2, 3, 4]

    class Stop(Exception):
        pass

    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        unipc_sample(lambda v, i: v * 0.5, torch.ones(1, 2), sig, check_interrupt=check)


# ------------------------------------------------------------------------------------------------
# CFG
# ------------------------------------------------------------------------------------------------


def test_cfg_rescale_function_against_float64():
    """FramePack's rescale as ComfyUI's sampler_cfg_function (cond / uncond = x - x0) equals the
    formula on velocities, in float64."""
    from framepack_oneframe.framepack_core.comfy_sampling import rescale_cfg_function

    g = torch.Generator().manual_seed(3)
    x, xp, xn = (torch.randn(2, 16, 1, 3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    sigma, cfg, rs = 0.6, 4.0, 0.7
    vp, vn = (x - xp).numpy() / sigma, (x - xn).numpy() / sigma
    v = vn + cfg * (vp - vn)
    out = []
    for b in range(2):
        scaled = v[b] * (vp[b].std(ddof=1) / v[b].std(ddof=1))
        out.append(rs * scaled + (1 - rs) * v[b])
    expect = x.numpy() - np.stack(out) * sigma
    args = {"input": x, "cond": x - xp, "uncond": x - xn, "cond_denoised": xp, "uncond_denoised": xn,
            "cond_scale": cfg, "sigma": torch.full((2,), sigma, dtype=torch.float64), "model": None}
    # ComfyUI forms the guided x0 as input - cfg_function(args)
    np.testing.assert_allclose((x - rescale_cfg_function(rs)(args)).numpy(), expect, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose((x - rescale_cfg_function(0.0)(args)).numpy(), x.numpy() - v * sigma,
                               rtol=1e-12, atol=1e-12)
    assert rescale_cfg(torch.ones(1, 3), torch.ones(1, 3), 0.0).eq(1).all()

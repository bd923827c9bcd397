"""`FixedPowerProbe`: the probe's power is held, so the object-probe scale ambiguity cannot drift."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from janssen.optics import FixedPowerProbe


def _modes(seed=0, shape=(2, 8, 8)):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), jnp.complex64)


def test_fields_carry_the_held_power_whatever_the_modes_scale():
    modes = _modes()
    probe = FixedPowerProbe(modes, 5e-7, 1e-7, power=250.0)
    np.testing.assert_allclose(float(jnp.sum(jnp.abs(probe.fields()) ** 2)), 250.0, rtol=1e-5)
    scaled = probe.with_fields(3.7 * modes)
    np.testing.assert_allclose(np.asarray(scaled.fields()), np.asarray(probe.fields()), rtol=1e-5, atol=1e-6)
    own = FixedPowerProbe(modes, 5e-7, 1e-7)  # default: the modes' own power
    np.testing.assert_allclose(np.asarray(own.fields()), np.asarray(modes), rtol=1e-5, atol=1e-6)


def test_no_gradient_along_the_scale(x64):
    """A loss of the fields has zero derivative along `modes -> (1 + t) modes` (analytic: the fields do not move)."""
    modes = _modes(1).astype(jnp.complex128)
    target = _modes(2).astype(jnp.complex128)

    def loss(m):
        fields = FixedPowerProbe(m, 5e-7, 1e-7, power=10.0).fields()
        return jnp.sum(jnp.abs(fields - target) ** 2)

    grad = jax.grad(loss)(modes)
    # JAX's gradient of a complex leaf is the conjugate direction: d/dt L((1+t) m) = Re <conj(g), m> * 2.
    along_scale = float(jnp.real(jnp.vdot(jnp.conj(grad), modes)))
    assert abs(along_scale) < 1e-10 * float(jnp.linalg.norm(grad)) * float(jnp.linalg.norm(modes))
    assert float(jnp.linalg.norm(grad)) > 1.0  # the other directions are not flat


def test_refuses_a_non_positive_power():
    with pytest.raises(ValueError, match="power"):
        FixedPowerProbe(_modes(), 5e-7, 1e-7, power=0.0)

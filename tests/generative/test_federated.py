"""Generators behind one federated interface, looked up by name."""
import numpy as np
import pytest

from generative import FEDERATED, GENERATORS, federated_class, federated_generator, federated_summary

FAST = {"ctgan": {"epochs": 2, "batch_size": 100, "gen_dims": (32, 32), "dis_dims": (32, 32), "z_dim": 16},
        "vae_bgm": {"epochs": 3, "hidden": 32, "latent": 4, "calibrate_binary": False},
        "bayesian_network": {"max_indegree": 1},
        "sd_sharing": {"kind": "bayesian_network", "max_indegree": 1}}


def test_generators_are_looked_up_by_name():
    assert set(FEDERATED) <= set(GENERATORS) and "sdv_ctgan" not in FEDERATED  # sdv: centralised reference only
    for name, cls in FEDERATED.items():
        assert cls.name == name
    with pytest.raises(ValueError, match="generator 'gan9000' is not one of vae_bgm, bayesian_network, ctgan, sd_sharing"):
        federated_class("gan9000")


def test_hyper_parameters_are_checked_by_the_generator():
    assert federated_class("vae_bgm").check_hyper({"hidden": 32}) == {"hidden": 32}
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['bogus'\] for ctgan"):
        federated_class("ctgan").check_hyper({"bogus": 1})
    assert federated_class("sd_sharing").check_hyper({}) == {"kind": "vae_bgm"}
    assert federated_class("sd_sharing").check_hyper({"kind": "bayesian_network", "max_indegree": 2}) == \
        {"kind": "bayesian_network", "max_indegree": 2}
    with pytest.raises(ValueError, match="kind='sd_sharing' must be one of"):
        federated_class("sd_sharing").check_hyper({"kind": "sd_sharing"})


@pytest.mark.parametrize("kind", ["vae_bgm", "ctgan", "bayesian_network"])
def test_a_round_of_steps_gives_a_generator_and_messages_of_arrays_and_numbers(kind, spec, nodes):
    frames = {f"H{k}": tr for k, (tr, _) in enumerate(nodes[1:])}  # the two smaller nodes: fast
    holds = {f"H{k}": ho for k, (_, ho) in enumerate(nodes[1:])}
    summary = federated_summary(list(frames.values()), spec)
    fed = federated_generator(kind, spec, summary, hyper=FAST[kind], local_epochs=1, seed=3)
    fed.start()
    sizes = {n: len(df) for n, df in frames.items()}
    for step in fed.steps():
        message, extras = step.request(sizes, sum(sizes.values()))
        answers = {}
        for k, n in enumerate(frames):
            node = federated_generator(kind, spec, message.get("summary"), hyper=FAST[kind], local_epochs=1, seed=3)
            answers[n] = node.step(step.name).node({**message, **extras.get(n, {})}, frames[n], holds[n], 10 + k)
            _assert_message(answers[n], f"{kind} {step.name}")
        step.aggregate(answers)
    assert len(fed.generator().sample(30, seed=1)) == 30
    with pytest.raises(ValueError, match=f"generator '{kind}' has no step 'share'"):
        fed.step("share")


def _assert_message(o, where):
    if isinstance(o, dict):
        for v in o.values():
            _assert_message(v, where)
    elif isinstance(o, (list, tuple)):
        for v in o:
            _assert_message(v, where)
    else:
        assert o is None or isinstance(o, (int, float, str, np.ndarray, np.number)), (where, type(o))

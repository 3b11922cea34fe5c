"""The "Generate synthetic cohort" form on the study page (same service as the API)."""
from __future__ import annotations

import json

from django import forms

from portal.synthesis.services import GENERATORS, LOCAL_EPOCHS, ROUNDS, ROWS

GENERATOR_LABELS = {"vae_bgm": "VAE-BGM (variational autoencoder + latent mixture)",
                    "bayesian_network": "Bayesian network (one round: structure votes + summed counts)",
                    "ctgan": "CTGAN (Fed-TGAN; needs many epochs to be useful)",
                    "sd_sharing": "Synthetic-data sharing (one round: each hospital trains alone, "
                                  "gates its rows, shares those that pass)"}


class GenerationForm(forms.Form):
    generator = forms.ChoiceField(choices=[(g, GENERATOR_LABELS[g]) for g in GENERATORS], initial="vae_bgm")
    rounds = forms.IntegerField(min_value=ROUNDS.lo, max_value=ROUNDS.hi, initial=5, help_text="Federated rounds.")
    local_epochs = forms.IntegerField(min_value=LOCAL_EPOCHS.lo, max_value=LOCAL_EPOCHS.hi, initial=20,
                                      help_text="Local epochs per round on each hospital's node.")
    rows = forms.IntegerField(min_value=ROWS.lo, max_value=ROWS.hi, initial=0, label="Rows of the cohort",
                              help_text="0 = as many synthetic patients as the hospitals' training patients.")
    generator_params = forms.CharField(required=False, label="Generator settings (JSON, optional)",
                                       widget=forms.TextInput(attrs={"placeholder": '{"beta": 0.5}'}),
                                       help_text="Constructor keywords of the generator, e.g. beta, latent, hidden; "
                                                 "for synthetic-data sharing also \"kind\" (default vae_bgm).")

    def clean_generator_params(self) -> dict:
        text = (self.cleaned_data.get("generator_params") or "").strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("must be a JSON object such as {\"beta\": 0.5}")
        return value

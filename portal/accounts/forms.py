"""The person's own preferences (the identity provider owns name, roles and organisation)."""
import zoneinfo

from django import forms

_ZONES = sorted(z for z in zoneinfo.available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/")))


class PreferencesForm(forms.Form):
    timezone = forms.ChoiceField(label="Time zone",
                                 choices=[("UTC", "UTC")] + [(z, z.replace("_", " ")) for z in _ZONES],
                                 help_text="Every date and time in the portal is shown in this zone.")

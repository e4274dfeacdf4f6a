"""The rollback request form (browser); the API validates the same fields in the service."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import RollbackRequest


class RollbackForm(forms.Form):
    mode = forms.ChoiceField(
        choices=RollbackRequest.Mode.choices, widget=forms.RadioSelect, initial="previous"
    )
    sha = forms.CharField(
        required=False,
        max_length=64,
        label="Commit SHA",
        help_text="Only for “Revert one commit”: 7 to 40 hexadecimal characters.",
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=4000)
    incident = forms.CharField(
        required=False, max_length=500, label="Incident reference", help_text="Free text or a URL."
    )
    observed_deployment = forms.IntegerField(required=False, widget=forms.HiddenInput)
    confirm_moved = forms.BooleanField(required=False, label="I reviewed the new state; roll back anyway")
    emergency = forms.BooleanField(
        required=False, label="Emergency: merge automatically once the required checks pass"
    )
    emergency_justification = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), max_length=4000, label="Justification"
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("mode") == RollbackRequest.Mode.COMMIT and not (data.get("sha") or "").strip():
            self.add_error("sha", "Enter the SHA of the commit to revert.")
        if data.get("emergency") and not (data.get("emergency_justification") or "").strip():
            self.add_error("emergency_justification", "An emergency merge needs a justification.")
        return data

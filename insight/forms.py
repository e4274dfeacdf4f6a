"""Input parsing for the notification admin page."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import EVENT_KIND_CHOICES, Subscription


class SubscriptionForm(forms.Form):
    name = forms.CharField(max_length=100)
    project_glob = forms.CharField(
        max_length=200, initial="*", label="Projects", help_text="Argo CD project glob: * for all, pay* …"
    )
    event_kinds = forms.MultipleChoiceField(
        choices=EVENT_KIND_CHOICES, widget=forms.CheckboxSelectMultiple, required=False, label="Events"
    )
    extra_kinds = forms.CharField(
        max_length=300,
        required=False,
        label="Other audit actions",
        help_text="Comma-separated globs, e.g. promotion.merged, rollback.healthy",
    )
    target_kind = forms.ChoiceField(choices=Subscription.Target.choices, label="Target")
    # A Slack webhook URL is a secret: never rendered back, not even into a form sent back with errors.
    url = forms.URLField(
        max_length=500,
        label="Webhook URL",
        assume_scheme="https",
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted and never shown again (only its host's last characters).",
    )
    secret = forms.CharField(
        max_length=300,
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="HMAC key for X-GitopsPortal-Signature-256 (generic webhooks)",
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        kinds = list(data.get("event_kinds") or [])
        for raw in (data.get("extra_kinds") or "").split(","):
            value = raw.strip()
            if value:
                if len(value) > 64 or not all(c.isalnum() or c in "._*?-" for c in value):
                    self.add_error("extra_kinds", f"not an action glob: {value[:64]}")
                kinds.append(value)
        if not kinds:
            self.add_error("event_kinds", "choose at least one event kind")
        if data.get("target_kind") == Subscription.Target.GENERIC and not data.get("secret"):
            self.add_error("secret", "a generic webhook needs a secret to sign its requests")
        data["all_kinds"] = kinds
        return data

"""One module per provider: how it signs its callbacks and how its events map to receipts."""

from __future__ import annotations

from leo_activation.gateway.events import Provider
from leo_activation.gateway.providers import mailgun, postmark, sendgrid, ses, twilio, zalo

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        sendgrid.SendGrid(),
        twilio.Twilio(),
        ses.Ses(),
        mailgun.Mailgun(),
        postmark.Postmark(),
        zalo.Zalo(),
    )
}

"""E-mail over SMTP (aiosmtplib): STARTTLS on 587, implicit TLS on 465, or plain (no TLS).

The message has a plain-text part and an HTML alternative; both come from the same templates
(the HTML one autoescaped). Certificates are verified unless `tls_verify` is false;
`tls_ca_file` names a CA bundle for a private mail server.
"""

from __future__ import annotations

import email.utils
import html
import ssl
from email.message import EmailMessage

import aiosmtplib

from vpsmon.collector.notify.channels import Delivery, DeliveryError
from vpsmon.collector.notify.urlguard import BlockedTarget


def build_message(d: Delivery) -> EmailMessage:
    text = d.message("text")
    rich = d.message("html")
    msg = EmailMessage()
    msg["Subject"] = text.title
    msg["From"] = d.settings["from"]
    msg["To"] = d.settings["to"]
    msg["Date"] = email.utils.formatdate(d.now, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid(domain="vpsmon")
    msg.set_content(text.body + "\n")
    msg.add_alternative(
        "<!doctype html><html><body>"
        f"<h2>{html.escape(rich.title)}</h2>"
        f'<pre style="font-family:inherit;white-space:pre-wrap">{rich.body}</pre>'
        "</body></html>\n",
        subtype="html",
    )
    return msg


def tls_context(d: Delivery) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=d.settings.get("tls_ca_file") or None)
    if str(d.settings.get("tls_verify", "true")).lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def send_email(d: Delivery) -> str:
    host, port = d.settings["host"], int(d.settings.get("port") or 587)
    security = d.settings.get("security", "starttls")
    try:
        await d.guard.check_host(host, port)
    except BlockedTarget as err:
        raise DeliveryError(str(err), retry=False, status="blocked") from None
    except OSError as err:
        raise DeliveryError(f"cannot resolve {host}: {err}", status="network") from None
    recipients = [a.strip() for a in d.settings["to"].split(",") if a.strip()]
    try:
        errors, response = await aiosmtplib.send(
            build_message(d),
            recipients=recipients,
            hostname=host,
            port=port,
            username=d.settings.get("username") or None,
            password=d.settings.get("password") or None,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            tls_context=tls_context(d) if security != "none" else None,
            timeout=d.timeout,
        )
    except aiosmtplib.SMTPResponseException as err:
        raise DeliveryError(
            f"SMTP {err.code}: {err.message}",
            retry=err.code >= 400 and err.code < 500,
            status=f"SMTP {err.code}",
        ) from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
        raise DeliveryError(f"{type(err).__name__}: {err}", status="network") from None
    if errors:
        refused = ", ".join(f"{k}: {v.code}" for k, v in errors.items())
        raise DeliveryError(f"refused recipients {refused}", retry=False, status="refused")
    return ("SMTP 250 " + response.splitlines()[0])[:200] if response else "SMTP 250"

"""Templates: storage rules (every Liquid source parses, each channel has what it needs) and previews."""

from __future__ import annotations

import re
import uuid
from typing import Any

import css_inline
from sqlalchemy.ext.asyncio import AsyncSession

from clarion.audience import service as audience
from clarion.content import rendering
from clarion.content.repository import TemplateRepo
from clarion.content.schemas import (
    EmailPreview,
    PreviewRequest,
    SmsPreview,
    TemplateCreate,
    TemplateUpdate,
    TextPreview,
    WhatsAppLanguage,
    WhatsAppMessageTemplate,
    WhatsAppPreview,
)
from clarion.errors import Invalid, field_error
from clarion.kit.pagination import PageRows
from clarion.kit.repository import conflict_on_violation
from clarion.kit.sms import sms_segments
from clarion.models import Template

LIQUID_FIELDS = (("subject", "text"), ("body_html", "html"), ("body_text", "text"),
                 ("header_html", "html"), ("footer_html", "html"))
TEXT_ONLY_CHANNELS = ("sms", "telegram", "push")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
PREVIEW_CAMPAIGN = {"id": "preview", "name": "Preview"}


def _blank_to_none(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def _apply(template: Template, data: dict[str, Any]) -> None:
    whatsapp_given = "whatsapp" in data
    whatsapp = data.pop("whatsapp", None)
    for field, value in data.items():
        if field in ("subject", "body_html", "body_text", "header_html", "footer_html", "description",
                     "thumbnail_url"):
            value = _blank_to_none(value)
        setattr(template, field, value)
    if whatsapp_given:
        template.provider_template_name = whatsapp["name"] if whatsapp else None
        template.language_code = whatsapp["language_code"] if whatsapp else None
        template.components = whatsapp["components"] if whatsapp else None
    if template.channel != "whatsapp" and not whatsapp_given:
        # Moving a template off WhatsApp drops the provider template it named.
        template.provider_template_name = template.language_code = template.components = None


def _check(template: Template) -> None:
    """Every rule a stored template keeps; all problems are reported at once, by field."""
    errors: list[dict[str, Any]] = []
    channel = template.channel
    if channel == "email":
        if not template.subject:
            errors.append(field_error(["body", "subject"], "an email template needs a subject", "missing"))
        if not template.body_html and not template.body_text:
            errors.append(field_error(["body", "body_html"], "an email template needs body_html or body_text",
                                      "missing"))
    elif channel in TEXT_ONLY_CHANNELS and not template.body_text:
        errors.append(field_error(["body", "body_text"], f"a {channel} template needs body_text", "missing"))
    if channel == "whatsapp":
        if not template.provider_template_name or not template.language_code:
            errors.append(field_error(["body", "whatsapp"], "a whatsapp template needs whatsapp.name and "
                                      "whatsapp.language_code", "missing"))
    elif template.provider_template_name:
        errors.append(field_error(["body", "whatsapp"], f"whatsapp applies only to channel whatsapp, not {channel}"))
    for name in template.variables or {}:
        if not _VARIABLE_NAME.match(name):
            errors.append(field_error(["body", "variables", name], "a variable is a name or a dotted path of "
                                      "names (letters, digits, _)"))
        elif name in rendering.RESERVED_NAMES:
            errors.append(field_error(["body", "variables", name], f"{name} is provided by Clarion; give a "
                                      "default for a path inside it instead (e.g. contact.attributes.city)"))
    for field, kind in LIQUID_FIELDS:
        source = getattr(template, field)
        if source:
            try:
                rendering.compile_template(source, kind=kind, field=field)
            except rendering.TemplateSyntaxError as exc:
                errors.append(field_error(["body", field], str(exc), "liquid_syntax"))
    for exc in rendering.whatsapp_syntax_errors(template.components or []):
        errors.append(field_error(["body", *exc.loc], str(exc), "liquid_syntax"))
    if errors:
        raise Invalid(errors[0]["msg"], errors=errors)


async def _settle_default(repo: TemplateRepo, template: Template) -> None:
    if template.is_default:
        await repo.clear_default(template.channel, except_id=template.id)


async def create_template(session: AsyncSession, tenant_id: uuid.UUID, data: TemplateCreate) -> Template:
    repo = TemplateRepo(session, tenant_id)
    template = Template(channel=data.channel, variables={})
    fields = data.model_dump(exclude_none=True)
    fields.setdefault("whatsapp", None)
    _apply(template, fields)
    _check(template)
    repo.add(template)
    await session.flush()
    await _settle_default(repo, template)
    return template


async def get_template(session: AsyncSession, tenant_id: uuid.UUID, template_id: uuid.UUID) -> Template:
    """The tenant's template; NotFound for an unknown id or another tenant's template."""
    return await TemplateRepo(session, tenant_id).get(template_id)


async def list_templates(session: AsyncSession, tenant_id: uuid.UUID, *, channel: str | None, is_active: bool | None,
                         q: str | None, limit: int, cursor: str | None) -> PageRows[Template]:
    return await TemplateRepo(session, tenant_id).list_page(channel=channel, is_active=is_active, q=q,
                                                            limit=limit, cursor=cursor)


async def update_template(session: AsyncSession, tenant_id: uuid.UUID, template_id: uuid.UUID,
                          data: TemplateUpdate) -> Template:
    repo = TemplateRepo(session, tenant_id)
    template = await repo.get(template_id)
    changes = data.model_dump(exclude_unset=True)
    for required in ("name", "channel", "variables", "is_active", "is_default"):
        if required in changes and changes[required] is None:
            raise Invalid(f"{required} cannot be null",
                          errors=[field_error(["body", required], "cannot be null", "missing")])
    if "whatsapp" in changes and data.whatsapp is not None:
        changes["whatsapp"] = data.whatsapp.model_dump(exclude_none=True)
    _apply(template, changes)
    _check(template)
    await session.flush()
    await _settle_default(repo, template)
    return template


async def delete_template(session: AsyncSession, tenant_id: uuid.UUID, template_id: uuid.UUID) -> None:
    repo = TemplateRepo(session, tenant_id)
    template = await repo.get(template_id)
    # campaigns.template_id is ON DELETE RESTRICT: a campaign still using the template makes this a 409.
    async with conflict_on_violation(session, f"template {template_id} is used by a campaign; change or delete "
                                     "those campaigns first", code="template_in_use"):
        await repo.remove(template)


# --- rendering a stored template -------------------------------------------------------------------------

def email_parts(template: Template) -> rendering.EmailParts:
    return rendering.EmailParts(subject=template.subject or "", body_html=template.body_html,
                                body_text=template.body_text, header_html=template.header_html,
                                footer_html=template.footer_html)


def render_template(template: Template, context: dict[str, Any]) -> EmailPreview | SmsPreview | TextPreview | \
        WhatsAppPreview:
    """The message `template` makes for one context (see rendering.build_context), in its channel's shape.
    Raises rendering.RenderError when the template needs a value the context lacks."""
    if template.channel == "email":
        email = rendering.render_email(email_parts(template), context)
        return EmailPreview(subject=email.subject, html=email.html, text=email.text)
    if template.channel == "whatsapp":
        components = rendering.render_whatsapp_components(template.components or [], context)
        return WhatsAppPreview(template=WhatsAppMessageTemplate(
            name=template.provider_template_name or "", language=WhatsAppLanguage(code=template.language_code or ""),
            components=components))
    text = rendering.render_text(template.body_text or "", context)
    if template.channel == "sms":
        segments, encoding = sms_segments(text)
        return SmsPreview(text=text, segments=segments, encoding=encoding)
    return TextPreview(text=text)


async def preview_template(session: AsyncSession, tenant_id: uuid.UUID, template_id: uuid.UUID,
                           request: PreviewRequest, *, base_url: str) -> EmailPreview | SmsPreview | TextPreview | \
        WhatsAppPreview:
    template = await get_template(session, tenant_id, template_id)
    if (request.contact_id is None) == (request.sample is None):
        raise Invalid("give either contact_id or sample to preview with",
                      errors=[field_error(["body", "contact_id"], "exactly one of contact_id and sample is required")])
    if request.contact_id is not None:
        contact = rendering.contact_payload(await audience.get_contact(session, tenant_id, request.contact_id))
    else:
        assert request.sample is not None
        contact = request.sample.model_dump()
    context = rendering.build_context(
        contact, campaign=PREVIEW_CAMPAIGN | (request.campaign or {}), variables=template.variables or {},
        unsubscribe_url=f"{base_url}/t/u/preview", view_in_browser_url=f"{base_url}/t/v/preview")
    # A stand-in like the links above: the real deep link names the tenant's bot and a per-contact token.
    context["telegram_start_url"] = "https://t.me/preview_bot?start=preview"
    try:
        return render_template(template, context)
    except rendering.RenderError as exc:
        raise Invalid(str(exc), code="render_failed",
                      errors=[field_error(["template", *exc.loc], str(exc), "render_error")]) from exc
    except css_inline.InlineError as exc:
        raise Invalid(f"body_html: the CSS cannot be inlined: {exc}", code="render_failed",
                      errors=[field_error(["template", "body_html"], str(exc), "css_error")]) from exc

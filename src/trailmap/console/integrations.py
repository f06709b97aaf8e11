"""The Integrations pages of an organization: the list, a form to make one, and a page per
integration: a forge's webhook URL, steps, secret once and deliveries; a cluster's watch."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import Response

from trailmap.console.orgs import OrgMember, org_member, org_nav, posted_form, refused, when
from trailmap.console.pages import e, field_error, form_csrf, page, problem_text, see_other
from trailmap.errors import TrailmapError, ValidationFailed
from trailmap.graph.learn.declared import declared_sources, forget_source
from trailmap.http.context import context_of
from trailmap.http.sessions import clear_cookie, cookie_name, set_cookie
from trailmap.ingest.clone import check_repository_settings
from trailmap.ingest.repository_indexer import repository_view
from trailmap.integrations.deliveries import Delivery, list_deliveries
from trailmap.integrations.integrations import (
    Integration,
    create_integration,
    delete_integration,
    get_integration,
    list_integrations,
    rotate_secret,
    shows_secret,
    update_integration,
    webhook_path,
)
from trailmap.integrations.repositories import REPOSITORY_KIND, request_index

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

# A new secret travels from the POST that made it to the page that shows it in this short-lived
# cookie (HttpOnly, SameSite=Strict), as a new key's token does (console/keys.py); the page
# shows it only while it is still the integration's current secret, and clears it.
_SHOWN_ONCE_COOKIE: Final = "trailmap_new_secret"
_SHOWN_ONCE_SECONDS: Final = 120
_REFUSAL: Final = "Only owners and admins see and change the organization's integrations."
_FORGES: Final = {"github": "GitHub", "gitlab": "GitLab"}
_CLUSTERS: Final = {"kubernetes": "Kubernetes", "eks": "Amazon EKS"}
_CATALOGS: Final = {"backstage": "Backstage"}
_REPOSITORIES: Final = {"repository": "Repository (a graph source)"}
_KINDS: Final = {**_FORGES, **_CLUSTERS, **_CATALOGS, **_REPOSITORIES}
_SHOWN_DELIVERIES: Final = 50


async def _admin(request: Request, slug: str) -> OrgMember | Response:
    m = await org_member(request, slug)
    if isinstance(m, Response):
        return m
    if not m.may("manage_settings"):
        return refused(m, _REFUSAL)
    return m


def _base(m: OrgMember) -> str:
    return f"/orgs/{quote(m.slug)}/integrations"


def _env_map(text: str) -> dict[str, str]:
    env_map: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        namespace, sep, environment = line.partition("=")
        if not sep:
            raise ValidationFailed.field(
                "env_map", f"line {number}: write namespace=environment, one namespace a line"
            )
        env_map[namespace.strip()] = environment.strip()
    return env_map


def _cluster_settings(form: dict[str, str]) -> dict[str, object]:
    """A cluster's settings from the form: what is empty is not set; the kubeconfig is
    passed on only when one was pasted (it is never shown again)."""
    settings: dict[str, object] = {
        k: form.get(k, "").strip() or None for k in ("context", "cluster", "region", "default_env")
    }
    settings["env_map"] = _env_map(form.get("env_map", ""))
    namespaces = [n.strip() for n in form.get("namespaces", "").split(",") if n.strip()]
    settings["namespaces"] = namespaces or None
    if form.get("kubeconfig", "").strip():
        settings["kubeconfig"] = form["kubeconfig"]
    return settings


def _catalog_settings(form: dict[str, str]) -> dict[str, object]:
    """A Backstage's settings from the form: its base URL, and its token when one was typed
    (it is never shown again)."""
    settings: dict[str, object] = {
        "url": form.get("url", "").strip() or None,
        "default_env": form.get("catalog_env", "").strip() or None,
    }
    if form.get("token", "").strip():
        settings["token"] = form["token"].strip()
    return settings


def _repository_settings(form: dict[str, str]) -> dict[str, object]:
    """A repository's settings from the form: its remote, branch, environment, and its token
    when one was typed (it is never shown again)."""
    settings: dict[str, object] = {
        "url": form.get("repo_url", "").strip() or None,
        "branch": form.get("repo_branch", "").strip() or None,
        "default_env": form.get("repo_env", "").strip() or None,
    }
    if form.get("repo_token", "").strip():
        settings["token"] = form["repo_token"].strip()
    return settings


def _services(text: str) -> dict[str, str]:
    services: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        repo, sep, service = line.partition("=")
        if not sep:
            raise ValidationFailed.field(
                "services", f"line {number}: write owner/name=service, one repository a line"
            )
        services[repo.strip()] = service.strip()
    return services


# -- the list and the form ---------------------------------------------------------------------


def _create_form(
    m: OrgMember, values: dict[str, str] | None = None, error: TrailmapError | None = None
) -> str:
    values = values or {}
    kind = values.get("kind", "github")
    options = "".join(
        f"<option value={v}{' selected' if v == kind else ''}>{label}</option>"
        for v, label in _KINDS.items()
    )
    aliases = {"settings.branch": "branch", "settings.service": "service"}
    service_problem = next(
        (d for d in (error.details if error else ()) if (d.field or "").startswith("settings.s")),
        None,
    )
    name_attrs, name_error = field_error("name", error)
    kind_attrs, kind_error = field_error("kind", error)
    branch_attrs, branch_error = field_error("branch", error, aliases=aliases)
    service_attrs, service_error = field_error("service", error, aliases=aliases)
    services_attrs, services_error = field_error("services", error)
    if service_problem is not None and not services_error:
        services_attrs = " aria-invalid=true aria-describedby=services-error"
        services_error = (
            f"<p class=error id=services-error>{e(service_problem.field)}: "
            f"{e(service_problem.message)}</p>"
        )
    return (
        f"<h2>Add an integration</h2><form method=post action={_base(m)}>{form_csrf(m.user)}"
        f"<label for=kind>Kind</label><select id=kind name=kind{kind_attrs}>{options}</select>"
        f"{kind_error}<label for=name>Name</label>"
        f"<input id=name name=name required maxlength=100 value='{e(values.get('name', ''))}'"
        f"{name_attrs}>{name_error}"
        "<label for=services>Repositories and their services (optional; one a line, "
        "owner/name=service; a repository not listed is a service of its own name)</label>"
        f"<textarea id=services name=services rows=4 cols=50{services_attrs}>"
        f"{e(values.get('services', ''))}</textarea>{services_error}"
        "<label for=service>Service of every other repository (optional; if empty, each is a "
        "service of its own name)</label>"
        f"<input id=service name=service maxlength=200 value='{e(values.get('service', ''))}'"
        f"{service_attrs}>{service_error}"
        "<label for=branch>Default branch (optional; the repository's own if empty)</label>"
        f"<input id=branch name=branch maxlength=255 "
        f"value='{e(values.get('branch', ''))}'{branch_attrs}>{branch_error}"
        + _cluster_fields(values, error)
        + _catalog_fields(values, error if values.get("kind") == "backstage" else None)
        + _repository_fields(values, error if values.get("kind") == "repository" else None)
        + "<button type=submit>Add integration</button></form>"
    )


def _cluster_fields(values: dict[str, str], error: TrailmapError | None) -> str:
    """The settings of a Kubernetes or EKS integration (ignored for a forge)."""
    aliases = {f"settings.{k}": k for k in ("kubeconfig", "context", "cluster", "region")}
    env_problem = next(
        (d for d in (error.details if error else ()) if (d.field or "").startswith("settings.e")),
        None,
    )
    parts = []
    for name, label, limit in (
        (
            "context",
            "Kubernetes: the kubeconfig's context (optional; its current one if empty)",
            500,
        ),
        ("cluster", "Cluster name (in each event's source; for EKS, the cluster to watch)", 500),
        ("region", "EKS: the AWS region", 500),
        (
            "default_env",
            "Environment of a namespace not mapped below (optional; else the namespace's own name)",
            500,
        ),
        (
            "namespaces",
            "Namespaces to watch (optional, comma-separated; every one if empty)",
            20000,
        ),
    ):
        attrs, problem = field_error(name, error, aliases=aliases)
        parts.append(
            f"<label for={name}>{e(label)}</label><input id={name} name={name} "
            f"maxlength={limit} value='{e(values.get(name, ''))}'{attrs}>{problem}"
        )
    env_attrs, env_error = field_error("env_map", error)
    if env_problem is not None and not env_error:
        env_attrs = " aria-invalid=true aria-describedby=env_map-error"
        env_error = (
            f"<p class=error id=env_map-error>{e(env_problem.field)}: {e(env_problem.message)}</p>"
        )
    kube_attrs, kube_error = field_error("kubeconfig", error, aliases=aliases)
    return (
        "<fieldset><legend>Kubernetes and EKS clusters</legend>"
        "<label for=kubeconfig>Kubernetes: the kubeconfig (stored encrypted and never shown "
        "again; a bearer token or client certificate, no exec plugin or file paths)</label>"
        f"<textarea id=kubeconfig name=kubeconfig rows=6 cols=50 autocomplete=off "
        f"spellcheck=false{kube_attrs}></textarea>{kube_error}"
        + "".join(parts)
        + "<label for=env_map>Namespaces and their environments (optional; one a line, "
        "namespace=environment)</label>"
        f"<textarea id=env_map name=env_map rows=3 cols=50{env_attrs}>"
        f"{e(values.get('env_map', ''))}</textarea>{env_error}</fieldset>"
    )


def _catalog_fields(values: dict[str, str], error: TrailmapError | None) -> str:
    """The settings of a Backstage integration (ignored for the other kinds)."""
    aliases = {"settings.url": "url", "settings.token": "token"}
    url_attrs, url_error = field_error("url", error, aliases=aliases)
    token_attrs, token_error = field_error("token", error, aliases=aliases)
    return (
        "<fieldset><legend>Backstage</legend>"
        "<label for=url>Backstage: its base URL (the backend, below which /api/catalog "
        "answers)</label>"
        f"<input id=url name=url type=url maxlength=500 value='{e(values.get('url', ''))}'"
        f"{url_attrs}>{url_error}"
        "<label for=token>Backstage: a token its backend accepts (stored encrypted and never "
        "shown again)</label>"
        f"<input id=token name=token type=password autocomplete=off maxlength=4096"
        f"{token_attrs}>{token_error}"
        "<label for=catalog_env>Environment of the catalog's services (optional; the "
        "organization's main one if empty)</label>"
        f"<input id=catalog_env name=catalog_env maxlength=200 "
        f"value='{e(values.get('catalog_env', ''))}'></fieldset>"
    )


def _repository_fields(values: dict[str, str], error: TrailmapError | None) -> str:
    """The settings of a repository integration (ignored for the other kinds)."""
    aliases = {
        "settings.url": "repo_url",
        "settings.token": "repo_token",
        "settings.branch": "repo_branch",
    }
    url_attrs, url_error = field_error("repo_url", error, aliases=aliases)
    token_attrs, token_error = field_error("repo_token", error, aliases=aliases)
    branch_attrs, branch_error = field_error("repo_branch", error, aliases=aliases)
    return (
        "<fieldset><legend>Repository</legend>"
        "<label for=repo_url>Repository: its git remote (https://...), or a folder the "
        "operator allows (TRAILMAP_REPOSITORY_PATHS)</label>"
        f"<input id=repo_url name=repo_url maxlength=500 "
        f"value='{e(values.get('repo_url', ''))}'{url_attrs}>{url_error}"
        "<label for=repo_branch>Repository: its branch (optional; the remote's default if "
        "empty)</label>"
        f"<input id=repo_branch name=repo_branch maxlength=255 "
        f"value='{e(values.get('repo_branch', ''))}'{branch_attrs}>{branch_error}"
        "<label for=repo_token>Repository: a token that may read it (optional; stored "
        "encrypted and never shown again)</label>"
        f"<input id=repo_token name=repo_token type=password autocomplete=off maxlength=4096"
        f"{token_attrs}>{token_error}"
        "<label for=repo_env>Environment of its services (optional; the organization's main "
        "one if empty)</label>"
        f"<input id=repo_env name=repo_env maxlength=200 "
        f"value='{e(values.get('repo_env', ''))}'></fieldset>"
    )


def _latest(integration: Integration) -> str:
    """A forge's last delivery; a cluster's watch in a word, its last event and error."""
    watch = integration.watch
    if watch is None:
        return e(when(integration.last_delivery))
    state = "watching" if watch.watching else "not watching"
    error = " · <span class=error>error</span>" if watch.last_error else ""
    return f"{state} · {e(when(watch.last_event))}{error}"


def _list_table(m: OrgMember, found: list[Integration]) -> str:
    if not found:
        return "<p>No integrations yet. Add one to receive a forge's webhooks.</p>"
    rows = "".join(
        f"<tr><td data-label=Name><a href={_base(m)}/{e(i.id)}>{e(i.name)}</a></td>"
        f"<td data-label=Kind>{e(_KINDS.get(i.kind, i.kind))}</td>"
        f"<td data-label=Status>{e(i.status)}</td>"
        f"<td data-label='Last delivery or event'>{_latest(i)}</td></tr>"
        for i in found
    )
    return (
        "<div class='wide stack'><table><thead><tr><th scope=col>Name</th><th scope=col>Kind"
        "</th><th scope=col>Status</th><th scope=col>Last delivery or event</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


async def _list_page(
    request: Request,
    m: OrgMember,
    *,
    error: TrailmapError | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    found = await list_integrations(context_of(request).db, m.org_id, who=m.membership)
    problem = f"<p class=error role=alert>{e(problem_text(error))}</p>" if error else ""
    body = (
        f"{problem}<p class=muted>GitHub and GitLab webhooks put deployments, releases, merges "
        "and pipelines on the timeline. Each integration has its own URL and secret. A "
        "Kubernetes or EKS cluster is watched by the server: its rollouts, crash loops and "
        "ConfigMap changes.</p>" + _list_table(m, found) + _create_form(m, values, error)
    )
    status = error.status if error is not None else 200
    return page(f"Integrations · {m.name}", body, nav=org_nav(m), status=status)


@router.get("/orgs/{slug}/integrations")
async def integrations_page(request: Request, slug: str) -> Response:
    m = await _admin(request, slug)
    if isinstance(m, Response):
        return m
    return await _list_page(request, m)


def _secret_shown_once(
    request: Request, m: OrgMember, integration: Integration, secret: str
) -> Response:
    response = see_other(f"{_base(m)}/{quote(integration.id)}")
    set_cookie(
        request,
        response,
        _SHOWN_ONCE_COOKIE,
        f"{integration.id}:{secret}",
        max_age=_SHOWN_ONCE_SECONDS,
        samesite="strict",
    )
    return response


@router.post("/orgs/{slug}/integrations")
async def integrations_create(request: Request, slug: str) -> Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    if not m.may("manage_settings"):
        return refused(m, _REFUSAL)
    ctx = context_of(request)
    kind = form.get("kind", "")
    try:
        settings: dict[str, object] = (
            _cluster_settings(form)
            if kind in _CLUSTERS
            else _catalog_settings(form)
            if kind in _CATALOGS
            else _repository_settings(form)
            if kind in _REPOSITORIES
            else {
                "services": _services(form.get("services", "")),
                "service": form.get("service", "").strip() or None,
                "branch": form.get("branch", "").strip() or None,
            }
        )
        check_repository_settings(kind, settings, local_roots=ctx.settings.repository_roots)
        made, secret = await create_integration(
            ctx.db,
            m.org_id,
            who=m.membership,
            by=m.actor(request),
            kind=kind,
            name=form.get("name", ""),
            settings=settings,
            secret_key=ctx.settings.encryption_secret,
        )
    except TrailmapError as error:
        secret_fields = ("kubeconfig", "token", "repo_token")
        kept = {k: v for k, v in form.items() if k not in secret_fields}  # never shown
        return await _list_page(request, m, error=error, values=kept)
    if made.kind == REPOSITORY_KIND:
        # Connecting starts an index in the background, as over REST.
        await request_index(ctx.db, m.org_id, made.id, who=None, reason="connected")
    if not made.has_webhook:  # a cluster or a catalog: no webhook, so no secret to show
        return see_other(f"{_base(m)}/{quote(made.id)}")
    return _secret_shown_once(request, m, made, secret)


# -- one integration ---------------------------------------------------------------------------


def _steps(integration: Integration, url: str) -> str:
    if integration.kind == "github":
        return (
            "<h2>Connect it in GitHub</h2><ol>"
            "<li>In the repository (or organization): <b>Settings → Webhooks → Add webhook"
            "</b>.</li>"
            f"<li><b>Payload URL</b>: <code id=webhook-url-step>{e(url)}</code></li>"
            "<li><b>Content type</b>: <code>application/json</code>.</li>"
            "<li><b>Secret</b>: the secret shown when the integration was made (or rotated)."
            "</li>"
            "<li><b>Which events</b>: “Let me select individual events” and tick Deployment "
            "statuses, Deployments, Pull requests, Pushes, Releases, Workflow runs (or send "
            "everything: what Trailmap does not read is ignored, with the reason below).</li>"
            "<li>Save. GitHub sends a <code>ping</code>; it appears under Deliveries.</li></ol>"
        )
    if integration.kind == "gitlab":
        return (
            "<h2>Connect it in GitLab</h2><ol>"
            "<li>In the project (or group): <b>Settings → Webhooks → Add new webhook</b>.</li>"
            f"<li><b>URL</b>: <code id=webhook-url-step>{e(url)}</code></li>"
            "<li><b>Secret token</b>: the secret shown when the integration was made (or "
            "rotated).</li>"
            "<li><b>Trigger</b>: Push events, Tag push events, Merge request events, Pipeline "
            "events, Deployment events, Releases events.</li>"
            "<li>Save, then <b>Test</b> to send one; it appears under Deliveries.</li></ol>"
        )
    return "<p>This kind of integration is watched from Trailmap's side; it takes no webhook.</p>"


def _deliveries_table(found: list[Delivery]) -> str:
    if not found:
        return "<p>No deliveries yet.</p>"
    rows = "".join(
        f"<tr data-delivery={e(d.delivery_id)}><td data-label=Received>{e(when(d.received))}</td>"
        f"<td data-label=Event>{e(d.event_name or '')}</td>"
        f"<td data-label=Delivery><code>{e(d.delivery_id)}</code></td>"
        f"<td data-label=Outcome>{e(d.outcome)}</td>"
        f"<td data-label=Why>{e(d.reason or '')}</td>"
        f"<td data-label=Events>{len(d.event_ids)}</td></tr>"
        for d in found
    )
    return (
        "<div class='wide stack'><table><thead><tr><th scope=col>Received</th>"
        "<th scope=col>Event</th><th scope=col>Delivery</th><th scope=col>Outcome</th>"
        "<th scope=col>Why</th><th scope=col>Events</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div>"
    )


def _settings_block(integration: Integration) -> str:
    settings = integration.settings
    mapped = "".join(
        f"<li><code>{e(repo)}</code> → {e(service)}</li>"
        for repo, service in settings.services.items()
    )
    others = settings.service or "a service of its own name"
    branch = settings.branch or "the repository's own"
    return (
        "<h2>Repositories and services</h2>"
        + (f"<ul>{mapped}</ul>" if mapped else "")
        + f"<p>Every other repository: {e(others)}. Default branch: {e(branch)}.</p>"
    )


def _watch_block(integration: Integration) -> str:
    """Whether the server watches the cluster, on which node, its last event and error."""
    watch = integration.watch
    settings = integration.settings
    if watch is None:
        return ""
    if watch.watching:
        state = (
            f"<b id=watching>watching</b> on node <code id=watch-node>{e(watch.node or '')}"
            f"</code> since {e(when(watch.since))}"
        )
    elif integration.status == "active":
        state = "<b id=watching>not watching</b> (an app node takes it within a minute)"
    else:
        state = "<b id=watching>not watching</b>: the integration is disabled"
    error = (
        f"<p class=error id=watch-error>Last error ({e(when(watch.last_error_at))}): "
        f"{e(watch.last_error)}</p>"
        if watch.last_error
        else ""
    )
    mapped = "".join(
        f"<li><code>{e(ns)}</code> → {e(env)}</li>" for ns, env in settings.env_map.items()
    )
    texts = settings.texts
    shown = "".join(
        f"<dt>{e(label)}</dt><dd>{e(texts[key])}</dd>"
        for key, label in (
            ("cluster", "Cluster"),
            ("context", "Context"),
            ("region", "Region"),
            ("default_env", "Environment of other namespaces"),
        )
        if key in texts
    )
    kubeconfig = (
        "<dt>Kubeconfig</dt><dd>"
        + ("set (stored encrypted, never shown)" if integration.sealed_settings else "not set")
        + "</dd>"
        if integration.kind == "kubernetes"
        else ""
    )
    namespaces = ", ".join(settings.namespaces) or "every namespace"
    return (
        f"<h2>Watch</h2><p>{state}. Last event: "
        f"<span id=watch-last-event>{e(when(watch.last_event))}</span>.</p>{error}"
        f"<h2>Cluster settings</h2><dl>{shown}{kubeconfig}<dt>Namespaces</dt>"
        f"<dd>{e(namespaces)}</dd></dl>" + (f"<ul>{mapped}</ul>" if mapped else "")
    )


def _catalog_block(integration: Integration, reading: dict[str, Any] | None) -> str:
    """A Backstage's settings and its last reading into the graph (or why it failed)."""
    token = "set (stored encrypted, never shown)" if integration.sealed_settings else "not set"
    if reading is None or not (reading["read"] or reading["error"]):
        last = "not read yet (an app node reads it within a minute)"
    else:
        last = (
            f"read {e(when(_parsed(reading['read'])))}: {reading['nodes']} nodes, "
            f"{reading['edges']} edges"
            if reading["read"]
            else "never read"
        )
    error = (
        f"<p class=error id=catalog-error>Last error ({e(when(_parsed(reading['error_at'])))}): "
        f"{e(reading['error'])}</p>"
        if reading is not None and reading["error"]
        else ""
    )
    return (
        "<h2>Catalog</h2><dl><dt>URL</dt>"
        f"<dd><code>{e(integration.settings.texts.get('url', 'not set'))}</code></dd>"
        f"<dt>Token</dt><dd>{token}</dd></dl><p id=catalog-reading>{last}.</p>{error}"
    )


def _parsed(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _secret_block(integration: Integration, secret: str | None) -> str:
    if secret is not None:
        return (
            "<h2>Secret</h2><p class=notice role=status>The webhook's secret. It is shown only "
            "now: paste it into the forge's webhook settings.</p>"
            f"<pre id=secret>{e(secret)}</pre>"
            "<button type=button data-copy=secret hidden>Copy</button>"
        )
    until = integration.previous_secret_until
    overlap = (
        f" The previous secret is accepted too until {e(when(until))}." if until is not None else ""
    )
    return (
        "<h2>Secret</h2><p>The secret was shown once, when it was made; Trailmap keeps it "
        f"encrypted. Rotate it to get a new one.{overlap}</p>"
    )


def _repository_block(view: dict[str, object], here: str, csrf: str) -> str:
    """A repository's indexing: the last reading (commit, counts, skipped files and why, the
    last error), whether an index is asked for or running, and a button to index it now."""
    reading = view.get("reading")
    if isinstance(reading, dict):
        skipped = reading.get("skipped") or []
        rows = "".join(
            f"<tr><td><code>{e(str(s.get('file', '')))}</code></td>"
            f"<td>{e(str(s.get('reason', '')))}</td></tr>"
            for s in skipped
            if isinstance(s, dict)
        )
        table = (
            f"<table id=skipped><tr><th>File skipped</th><th>Why</th></tr>{rows}</table>"
            if rows
            else "<p class=muted>No file was skipped.</p>"
        )
        read = (
            f"<p>Last reading: commit <code id=revision>{e(str(reading.get('revision') or '-'))}"
            f"</code> at {e(str(reading.get('read') or 'never'))}: "
            f"<b id=declared-nodes>{e(str(reading.get('nodes')))}</b> nodes, "
            f"<b id=declared-edges>{e(str(reading.get('edges')))}</b> edges.</p>{table}"
        )
        if reading.get("error"):
            read += (
                f"<p class=error id=index-error>Last error ({e(str(reading.get('error_at')))}): "
                f"{e(str(reading['error']))}</p>"
            )
    else:
        read = "<p>Not read yet.</p>"
    state = (
        "indexing now"
        if view.get("indexing")
        else "an index is asked for"
        if view.get("pending")
        else "up to date with its last index"
    )
    return (
        "<h2>Graph source</h2><p class=muted>The repository's Compose, Kubernetes, Helm, "
        "Backstage and CODEOWNERS files, read on connect, on a push to its default branch, on "
        "schedule and on demand.</p>"
        f"<p id=index-state>{e(state)}</p>{read}"
        f"<form class=inline method=post action={here}/index>{csrf}"
        "<button type=submit>Index now</button></form>"
    )


async def _integration_page(
    request: Request, m: OrgMember, integration_id: str, *, secret_cookie: str = ""
) -> Response:
    ctx = context_of(request)
    try:
        integration = await get_integration(ctx.db, m.org_id, integration_id, who=m.membership)
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    held_id, _, held_secret = secret_cookie.partition(":")
    secret = (
        held_secret
        if held_id == integration.id
        and held_secret
        and shows_secret(integration, held_secret, ctx.settings.encryption_secret)
        else None
    )
    found = await list_deliveries(
        ctx.db, m.org_id, integration.id, who=m.membership, limit=_SHOWN_DELIVERIES
    )
    here = f"{_base(m)}/{quote(integration.id)}"
    url = ctx.settings.public_url.rstrip("/") + webhook_path(integration.id)
    toggle, toggle_label = (
        ("disabled", "Disable") if integration.status == "active" else ("active", "Enable")
    )
    webhook = (
        f"<p>Webhook URL: <code id=webhook-url>{e(url)}</code> "
        "<button type=button data-copy=webhook-url hidden>Copy</button></p>"
        if integration.has_webhook
        else ""
    )
    repository = (
        _repository_block(await repository_view(ctx.db, integration), here, form_csrf(m.user))
        if integration.kind == REPOSITORY_KIND
        else None
    )
    forge = repository or (
        _secret_block(integration, secret)
        + _steps(integration, url)
        + _settings_block(integration)
        + "<h2>Deliveries</h2><p class=muted>The newest first; Trailmap keeps the last 200. "
        "A redelivery of the same delivery is answered as a duplicate and stores nothing.</p>"
        + _deliveries_table(found)
        if integration.has_webhook
        else _watch_block(integration)
    )
    if integration.kind in _CATALOGS:
        sources = await declared_sources(ctx.db, m.org_id)
        reading = next((s for s in sources if s["source"] == integration.id), None)
        forge += _catalog_block(integration, reading)
    rotate = (
        f"<form class=inline method=post action={here}/rotate>{form_csrf(m.user)}"
        "<button type=submit>Rotate secret (the old one works 24 hours more)</button></form> "
        if integration.has_webhook
        else ""
    )
    body = (
        f"<p>{e(_KINDS.get(integration.kind, integration.kind))} · status "
        f"<b id=status>{e(integration.status)}</b> · made {e(when(integration.created))} by "
        f"{e(integration.created_by)}</p>{webhook}"
        + forge
        + "<h2>Manage</h2>"
        + rotate
        + f"<form class=inline method=post action={here}/status>{form_csrf(m.user)}"
        f"<button type=submit name=status value={toggle}>{toggle_label}</button></form> "
        f"<a href={here}/delete>Delete…</a>"
        f"<p><a href={_base(m)}>All integrations</a></p>"
    )
    response = page(f"{integration.name} · Integrations", body, nav=org_nav(m), script=True)
    if secret_cookie:
        clear_cookie(request, response, _SHOWN_ONCE_COOKIE, samesite="strict")
    return response


@router.get("/orgs/{slug}/integrations/{integration_id}")
async def integration_page(request: Request, slug: str, integration_id: str) -> Response:
    m = await _admin(request, slug)
    if isinstance(m, Response):
        return m
    held = request.cookies.get(cookie_name(request, _SHOWN_ONCE_COOKIE), "")
    return await _integration_page(request, m, integration_id, secret_cookie=held)


async def _posted_admin(request: Request, slug: str) -> tuple[OrgMember, dict[str, str]] | Response:
    posted = await posted_form(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    if not m.may("manage_settings"):
        return refused(m, _REFUSAL)
    return posted


@router.post("/orgs/{slug}/integrations/{integration_id}/rotate")
async def integration_rotate(request: Request, slug: str, integration_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    ctx = context_of(request)
    try:
        rotated, secret = await rotate_secret(
            ctx.db,
            m.org_id,
            integration_id,
            who=m.membership,
            by=m.actor(request),
            secret_key=ctx.settings.encryption_secret,
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    return _secret_shown_once(request, m, rotated, secret)


@router.post("/orgs/{slug}/integrations/{integration_id}/status")
async def integration_status(request: Request, slug: str, integration_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    try:
        await update_integration(
            context_of(request).db,
            m.org_id,
            integration_id,
            {"status": form.get("status", "")},
            who=m.membership,
            by=m.actor(request),
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    return see_other(f"{_base(m)}/{quote(integration_id)}")


@router.get("/orgs/{slug}/integrations/{integration_id}/delete")
async def integration_delete_confirm(request: Request, slug: str, integration_id: str) -> Response:
    m = await _admin(request, slug)
    if isinstance(m, Response):
        return m
    try:
        found = await get_integration(
            context_of(request).db, m.org_id, integration_id, who=m.membership
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    here = f"{_base(m)}/{quote(found.id)}"
    body = (
        f"<p>Delete <b>{e(found.name)}</b>? Its webhook answers 404 from then on and its "
        "deliveries are forgotten; the events it made stay on the timeline. This cannot be "
        "undone.</p>"
        f"<form method=post action={here}/delete>{form_csrf(m.user)}"
        "<button type=submit name=confirm value=yes>Delete integration</button>"
        f"<a href={here}>Cancel</a></form>"
    )
    return page("Delete integration", body, nav=org_nav(m))


@router.post("/orgs/{slug}/integrations/{integration_id}/delete")
async def integration_delete(request: Request, slug: str, integration_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, form = posted
    if form.get("confirm") != "yes":
        return see_other(f"{_base(m)}/{quote(integration_id)}/delete")
    db = context_of(request).db
    try:
        removed = await delete_integration(
            db, m.org_id, integration_id, who=m.membership, by=m.actor(request)
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    # What it declared (a cluster's, a catalog's, a repository's) goes from the graph.
    await forget_source(db, m.org_id, removed.id)
    return see_other(_base(m))


@router.post("/orgs/{slug}/integrations/{integration_id}/index")
async def integration_index(request: Request, slug: str, integration_id: str) -> Response:
    posted = await _posted_admin(request, slug)
    if isinstance(posted, Response):
        return posted
    m, _form = posted
    try:
        await request_index(
            context_of(request).db, m.org_id, integration_id, who=m.membership, reason="asked for"
        )
    except TrailmapError as error:
        return refused(m, error.message, error.status)
    return see_other(f"{_base(m)}/{quote(integration_id)}")

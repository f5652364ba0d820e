"""Flask upstream for the end-to-end tests: reports what Flask/Werkzeug did with a request.

Routing, header and cookie parsing are Flask's own defaults (strict_slashes, case-sensitive
rules, Werkzeug's dev server), so the test sees what a real Flask app behind Portcullis would see.
Run: PORT=N .venv/bin/python tests/upstreams/flask_app.py
"""

import os

from flask import Flask, jsonify, request
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
# Imitates the setup Flask's docs recommend behind one reverse proxy: trust one hop of
# X-Forwarded-For and X-Forwarded-Host, so request.host comes from X-Forwarded-Host.
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_host=1)

# Every handler but /reports takes these; Flask adds HEAD and OPTIONS by itself.
ALL = ["GET", "POST", "PUT", "DELETE", "PATCH"]


def report(handler, tenant=None, order=None):
    # request.headers reads the WSGI environ, where X-User-Id and x_user_id both become
    # HTTP_X_USER_ID if the server passes the underscore one through: that is what we test.
    headers = {
        name: request.headers.get(name)
        for name in ("x-user-id", "x-user-issuer", "x-user-roles", "x-tenant-id")
    }
    return jsonify(
        framework="flask",
        handler=handler,
        method=request.method,
        path=request.path,
        host=request.host,
        tenant=tenant,
        order=order,
        vhost=request.headers.get("X-Vhost"),
        headers=headers,
        cookie_session_jwt=request.cookies.get("session_jwt"),
        query_method=request.args.get("_method"),
        # request.args is Werkzeug's flat MultiDict: get() gives the first value of a repeated
        # key, always a string; keys() lists each name once, in order of first appearance.
        query_debug=request.args.get("debug"),
        header_debug=request.headers.get("x-debug"),
        query_keys=list(request.args.keys()),
    )


# Werkzeug orders rules by specificity (static parts before converters), so the declaration
# order below does not decide the winner; it only reads from most to least specific.
@app.route("/admin/critical", methods=ALL)
@app.route("/admin/critical/<path:rest>", methods=ALL)
def admin_critical(rest=None):
    return report("admin-critical")


@app.route("/admin", methods=ALL)
@app.route("/admin/<path:rest>", methods=ALL)
def admin(rest=None):
    return report("admin")


@app.route("/tenants/<tenant>/admin", methods=ALL)
@app.route("/tenants/<tenant>/admin/<path:rest>", methods=ALL)
def tenant_admin(tenant, rest=None):
    return report("tenant-admin", tenant)


@app.route("/tenants/<tenant>", methods=ALL)
@app.route("/tenants/<tenant>/<path:rest>", methods=ALL)
def tenant(tenant, rest=None):
    return report("tenant", tenant)


# <int:oid> is Werkzeug's IntegerConverter: the regex \d+ on the decoded path (Python's \d
# matches every Unicode decimal digit), then int().
@app.route("/orders/<int:oid>/refund", methods=ALL)
def orders_refund(oid):
    return report("orders-refund", order=oid)


@app.route("/orders", methods=ALL)
@app.route("/orders/<path:rest>", methods=ALL)
def orders(rest=None):
    return report("orders")


@app.route("/items", methods=ALL)
def items():
    return report("items")


@app.route("/reports")  # GET only; Flask answers HEAD with the GET view
def reports():
    return report("reports")


@app.route("/me", methods=ALL)  # default strict_slashes: /me/ is not this rule
def me():
    return report("me")


@app.route("/public", methods=ALL)
@app.route("/public/<path:rest>", methods=ALL)
def public(rest=None):
    return report("public")


@app.route("/", methods=ALL)
@app.route("/<path:rest>", methods=ALL)
def fallback(rest=None):
    return report("fallback")


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True)

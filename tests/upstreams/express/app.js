// Express 5 upstream for the end-to-end tests: reports what Express did with a request.
// Routing is Express's default (case-insensitive, non-strict trailing slash), so the test sees
// what a real Express app behind Portcullis would see.
// Run: PORT=N node tests/upstreams/express/app.js
'use strict';

const express = require('express');
const cookieParser = require('cookie-parser');
const methodOverride = require('method-override');

const app = express();
// The usual "behind a proxy" setting: trust every hop, so req.host/req.hostname come from
// X-Forwarded-Host and req.protocol from X-Forwarded-Proto.
app.set('trust proxy', true);
// The classic HTML-form override: a POST with ?_method=DELETE becomes a DELETE before routing.
app.use(methodOverride('_method'));
app.use(cookieParser());

function report(handler) {
  return (req, res) => {
    const headers = {};
    for (const name of ['x-user-id', 'x-user-issuer', 'x-user-roles', 'x-tenant-id']) {
      headers[name] = req.get(name) ?? null;
    }
    res.json({
      framework: 'express',
      handler,
      method: req.method,
      path: req.path,
      // Express 5's req.host keeps the port (req.hostname drops it).
      host: req.host ?? null,
      tenant: req.params.tenant ?? null,
      vhost: req.get('x-vhost') ?? null,
      headers,
      cookie_session_jwt: req.cookies.session_jwt ?? null,
      query_method: typeof req.query._method === 'string' ? req.query._method : null,
    });
  };
}

// Express tries routes in declaration order, so the specific ones come first.
// path-to-regexp v8: `{/*rest}` is an optional named wildcard.
app.all('/admin/critical{/*rest}', report('admin-critical'));
app.all('/admin{/*rest}', report('admin'));
app.all('/tenants/:tenant/admin{/*rest}', report('tenant-admin'));
app.all('/tenants/:tenant{/*rest}', report('tenant'));
app.route('/items')
  .get(report('items'))
  .post(report('items'))
  .put(report('items'))
  .delete(report('items'))
  .patch(report('items'));
app.get('/reports', report('reports')); // Express runs GET routes for HEAD too
app.all('/me', report('me'));
app.all('/public{/*rest}', report('public'));
app.all('/{*rest}', report('fallback'));

const port = Number(process.env.PORT);
if (!port) throw new Error('PORT is required');
app.listen(port, '127.0.0.1');

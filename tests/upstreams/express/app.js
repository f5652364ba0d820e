// Express 5 upstream for the end-to-end tests: reports what Express did with a request.
// Routing is Express's default (case-insensitive, non-strict trailing slash), so the test sees
// what a real Express app behind Portcullis would see.
// Run: PORT=N node tests/upstreams/express/app.js
// With QUERY_PARSER=extended it sets Express's `query parser` to "extended" (qs, the Express 4
// default that many apps still turn on) and reports framework "express-extended".
'use strict';

const express = require('express');
const cookieParser = require('cookie-parser');
const methodOverride = require('method-override');

const queryParser = process.env.QUERY_PARSER || 'simple';
if (queryParser !== 'simple' && queryParser !== 'extended') {
  throw new Error(`QUERY_PARSER must be "simple" or "extended", not ${JSON.stringify(queryParser)}`);
}
const framework = queryParser === 'extended' ? 'express-extended' : 'express';

const app = express();
// "simple" (Node's querystring) is Express 5's default; "extended" parses with qs.
app.set('query parser', queryParser);
// The usual "behind a proxy" setting: trust every hop, so req.host/req.hostname come from
// X-Forwarded-Host and req.protocol from X-Forwarded-Proto.
app.set('trust proxy', true);
// The classic HTML-form override: a POST with ?_method=DELETE becomes a DELETE before routing.
// (method-override parses the query string itself, with Node's querystring, whatever the
// `query parser` setting.)
app.use(methodOverride('_method'));
app.use(cookieParser());

// A query value as the contract reports it: a string as is, an array or object as its JSON.
function queryValue(value) {
  if (value === undefined || value === null) return null;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function report(handler, order = () => null) {
  return (req, res) => {
    const headers = {};
    for (const name of ['x-user-id', 'x-user-issuer', 'x-user-roles', 'x-tenant-id']) {
      headers[name] = req.get(name) ?? null;
    }
    res.json({
      framework,
      handler,
      method: req.method,
      path: req.path,
      // Express 5's req.host keeps the port (req.hostname drops it).
      host: req.host ?? null,
      tenant: req.params.tenant ?? null,
      order: order(req),
      vhost: req.get('x-vhost') ?? null,
      headers,
      cookie_session_jwt: req.cookies.session_jwt ?? null,
      query_method: typeof req.query._method === 'string' ? req.query._method : null,
      query_debug: queryValue(req.query.debug),
      header_debug: req.get('x-debug') ?? null,
      query_keys: Object.keys(req.query),
    });
  };
}

// Express tries routes in declaration order, so the specific ones come first.
// path-to-regexp v8: `{/*rest}` is an optional named wildcard.
app.all('/admin/critical{/*rest}', report('admin-critical'));
app.all('/admin{/*rest}', report('admin'));
app.all('/tenants/:tenant/admin{/*rest}', report('tenant-admin'));
app.all('/tenants/:tenant{/*rest}', report('tenant'));
// path-to-regexp v8 has no regex parameters, so the handler checks :oid itself, as an Express
// app that validates its ids does (JavaScript's \d is ASCII), and passes anything else on to the
// next route. (An app that parseInt()s any segment, "1abc" included, needs a policy route that
// covers every segment: README "Request semantics".)
const orderId = (req) => Number(req.params.oid);
app.all('/orders/:oid/refund', (req, res, next) => {
  if (!/^\d+$/.test(req.params.oid)) return next();
  return report('orders-refund', orderId)(req, res);
});
app.all('/orders{/*rest}', report('orders'));
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

<?php
// PHP upstream for the end-to-end tests: reports what Symfony HttpFoundation (5.4, Debian's
// php-symfony-http-foundation), set up the way Laravel sets it up, did with a request.
// - Laravel's Request::capture(): enableHttpMethodParameterOverride() then createFromGlobals(),
//   so a POST's _method (form body, else query) or X-HTTP-Method-Override header is the method;
// - Laravel's TrustProxies middleware shape, trusting the local proxy (Envoy) for
//   X-Forwarded-For/Host/Port/Proto;
// - routing as Laravel's router matches: on rawurldecode() of the path info with trailing
//   slashes trimmed (Illuminate\Routing\Matching\UriValidator), against regexes compiled the
//   way Symfony's RouteCompiler compiles Laravel routes (flags sDu: the u flag makes \d match
//   any Unicode decimal digit), first match in declaration order.
// Run (the PHP built-in server with this file as router script, which sees every request):
//   PORT=N; php -S 127.0.0.1:$PORT tests/upstreams/php/index.php

declare(strict_types=1);

ini_set('display_errors', 'stderr');

require_once '/usr/share/php/Symfony/Component/HttpFoundation/autoload.php';

use Symfony\Component\HttpFoundation\Exception\SuspiciousOperationException;
use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Request;

Request::enableHttpMethodParameterOverride();
Request::setTrustedProxies(
    ['127.0.0.1', '::1'],
    Request::HEADER_X_FORWARDED_FOR | Request::HEADER_X_FORWARDED_HOST |
    Request::HEADER_X_FORWARDED_PORT | Request::HEADER_X_FORWARDED_PROTO
);
$request = Request::createFromGlobals();

const ANY = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']; // Route::any(): Router::$verbs
const ITEMS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH'];
const GET = ['GET', 'HEAD']; // Route::get() also answers HEAD

// [handler, regex, methods], in declaration order: Route::any('/admin/critical/{rest?}')
// ->where('rest', '.*'), Route::any('/orders/{id}/refund')->where('id', '\d+'), and so on.
// {tenant} is Laravel's default parameter pattern [^/]++.
const ROUTES = [
    ['admin-critical', '#^/admin/critical(?:/(?P<rest>.*))?$#sDu', ANY],
    ['admin', '#^/admin(?:/(?P<rest>.*))?$#sDu', ANY],
    ['tenant-admin', '#^/tenants/(?P<tenant>[^/]++)/admin(?:/(?P<rest>.*))?$#sDu', ANY],
    ['tenant', '#^/tenants/(?P<tenant>[^/]++)(?:/(?P<rest>.*))?$#sDu', ANY],
    ['orders-refund', '#^/orders/(?P<id>\d+)/refund$#sDu', ANY],
    ['orders', '#^/orders(?:/(?P<rest>.*))?$#sDu', ANY],
    ['items', '#^/items$#sDu', ITEMS],
    ['reports', '#^/reports$#sDu', GET],
    ['me', '#^/me$#sDu', ANY],
    ['public', '#^/public(?:/(?P<rest>.*))?$#sDu', ANY],
];

/** A query value as the contract reports it: a string as is, an array as its JSON. */
function query_value($value): ?string
{
    if ($value === null) {
        return null;
    }
    return is_array($value) ? json_encode($value, JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE) : (string) $value;
}

function route(Request $request, string $method): array
{
    $path = rawurldecode(rtrim($request->getPathInfo(), '/') ?: '/');
    foreach (ROUTES as [$handler, $regex, $methods]) {
        if (in_array($method, $methods, true) && preg_match($regex, $path, $m)) {
            return [$handler, $m];
        }
    }
    return ['fallback', []];
}

try {
    $method = $request->getMethod();
    $host = $request->getHost();
} catch (SuspiciousOperationException $e) {
    // An invalid override method or Host: Symfony's kernel answers 400 Bad Request.
    (new JsonResponse(['error' => $e->getMessage()], 400))->send();
    return;
}

[$handler, $params] = route($request, $method);
$order = null;
if ($handler === 'orders-refund') {
    // The {id} string as the controller gets it, as (int) $id reads it when it is numeric
    // (is_numeric: ASCII digits only), else null.
    $order = is_numeric($params['id']) ? (int) $params['id'] : null;
}
$query = $request->query->all();
$headers = [];
foreach (['x-user-id', 'x-user-issuer', 'x-user-roles', 'x-tenant-id'] as $name) {
    $headers[$name] = $request->headers->get($name);
}
$body = [
    'framework' => 'php',
    'handler' => $handler,
    'method' => $method,
    'path' => $request->getPathInfo(),
    'host' => $host,
    'tenant' => isset($params['tenant']) ? $params['tenant'] : null,
    'order' => $order,
    'vhost' => $request->headers->get('x-vhost'),
    'headers' => $headers,
    'cookie_session_jwt' => $request->cookies->get('session_jwt'),
    'query_method' => is_string($query['_method'] ?? null) ? $query['_method'] : null,
    'query_debug' => query_value($query['debug'] ?? null),
    'header_debug' => $request->headers->get('x-debug'),
    // PHP's query parser may turn numeric names into integers: reported as strings.
    'query_keys' => array_map('strval', array_keys($query)),
];
$response = new JsonResponse($body);
// Laravel's response()->json() encodes with no JSON_HEX_* options.
$response->setEncodingOptions(JSON_UNESCAPED_SLASHES | JSON_INVALID_UTF8_SUBSTITUTE);
$response->prepare($request);
// php -S streams without a length (chunked through Envoy); the tests' client reads by length.
$response->headers->set('Content-Length', (string) strlen($response->getContent()));
$response->send();

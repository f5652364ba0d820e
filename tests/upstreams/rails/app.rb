# Rails routing upstream for the end-to-end tests: reports what ActionDispatch (Rails 6.1,
# Debian's ruby-actionpack) and Rack 2.2 did with a request.
# - routes are drawn as in a Rails app's config/routes.rb, with the default optional (.:format)
#   suffix on every route and Journey's path normalisation;
# - the Rails default middleware that changes what routing sees, in Rails's order:
#   Rack::MethodOverride (a POST's _method form-body field, or X-HTTP-Method-Override, becomes
#   the method), ActionDispatch::ShowExceptions (a malformed query is 400, an unknown method
#   405: the status Rails gives each exception) and Rack::Head;
# - ActionDispatch::Request for method, path, host (X-Forwarded-Host is honoured), headers,
#   cookies and query parameters (Rack's nested query parser).
# Run: PORT=N ruby tests/upstreams/rails/app.rb
require 'json'
require 'rack'
require 'rack/handler/webrick'
require 'webrick'
require 'action_dispatch'

port = Integer(ENV.fetch('PORT') { abort 'PORT is required' })

# Strings from the wire are binary; report them as UTF-8 (invalid bytes replaced).
def text(value)
  return nil if value.nil?
  value = value.to_s.dup.force_encoding(Encoding::UTF_8)
  value.valid_encoding? ? value : value.scrub
end

# A query value as the contract reports it: a string as is, an array or hash as its JSON.
def query_value(value)
  return nil if value.nil?
  value.is_a?(String) ? text(value) : JSON.generate(value)
end

# The integer Order.find(params[:id]) would look up: ActiveModel::Type::Integer#serialize
# (what ActiveRecord binds) gives nil for a string not starting with optional space, a sign and
# an ASCII digit, else String#to_i.
def order_id(id)
  id.to_i if id.is_a?(String) && id.match?(/\A\s*[+-]?\d/)
end

def report(handler)
  lambda do |env|
    request = ActionDispatch::Request.new(env)
    params = request.path_parameters
    query = request.query_parameters
    headers = %w[X-User-Id X-User-Issuer X-User-Roles X-Tenant-Id].to_h do |name|
      [name.downcase, text(request.headers[name])]
    end
    body = {
      framework: 'rails',
      handler: handler,
      method: request.request_method,
      path: text(request.path),
      host: text(request.host),
      format: text(params[:format]),
      tenant: text(params[:tenant]),
      order: handler == 'orders-refund' ? order_id(params[:id]) : nil,
      vhost: text(request.headers['X-Vhost']),
      headers: headers,
      cookie_session_jwt: text(request.cookies['session_jwt']),
      query_method: query['_method'].is_a?(String) ? text(query['_method']) : nil,
      query_debug: query_value(query['debug']),
      header_debug: text(request.headers['X-Debug']),
      query_keys: query.keys.map { |key| text(key) },
    }
    [200, { 'Content-Type' => 'application/json' }, [JSON.generate(body) + "\n"]]
  end
end

ROUTES = ActionDispatch::Routing::RouteSet.new
# Journey tries routes in declaration order, so the specific ones come first.
ROUTES.draw do
  match '/admin/critical(/*rest)', to: report('admin-critical'), via: :all
  match '/admin(/*rest)', to: report('admin'), via: :all
  match '/tenants/:tenant/admin(/*rest)', to: report('tenant-admin'), via: :all
  match '/tenants/:tenant(/*rest)', to: report('tenant'), via: :all
  # As a Rails developer constrains a numeric id (Ruby's \d is ASCII).
  match '/orders/:id/refund', to: report('orders-refund'), via: :all, constraints: { id: /\d+/ }
  match '/orders(/*rest)', to: report('orders'), via: :all
  match '/items', to: report('items'), via: %i[get post put delete patch]
  get '/reports', to: report('reports') # Rails routes HEAD to GET routes
  match '/me', to: report('me'), via: :all
  match '/public(/*rest)', to: report('public'), via: :all
  match '/', to: report('fallback'), via: :all
  match '*rest', to: report('fallback'), via: :all
end

# What production Rails's exceptions app (ActionDispatch::PublicExceptions) answers for a JSON
# request: the status ShowExceptions chose, with the status and its name.
EXCEPTIONS_APP = lambda do |env|
  status = env['PATH_INFO'][1..].to_i
  error = Rack::Utils::HTTP_STATUS_CODES.fetch(status, Rack::Utils::HTTP_STATUS_CODES[500])
  [status, { 'Content-Type' => 'application/json' }, [JSON.generate(status: status, error: error) + "\n"]]
end

app = Rack::Builder.new do
  use Rack::MethodOverride
  use ActionDispatch::ShowExceptions, EXCEPTIONS_APP
  use Rack::Head
  run ROUTES
end

Rack::Handler::WEBrick.run(
  app,
  Host: '127.0.0.1',
  Port: port,
  Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN),
  AccessLog: [],
)

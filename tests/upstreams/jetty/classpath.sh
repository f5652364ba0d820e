#!/bin/sh
# Prints the classpath that compiles and runs JettyApp.java against Debian's libjetty9-java
# (the Servlet 4 API jar comes with it as libservlet-api-java). Fails naming a missing jar.
dir=/usr/share/java
cp=
for jar in servlet-api jetty9-server jetty9-servlet jetty9-security jetty9-http jetty9-io jetty9-util; do
  [ -f "$dir/$jar.jar" ] || { echo "missing $dir/$jar.jar (Debian package libjetty9-java)" >&2; exit 1; }
  cp="${cp:+$cp:}$dir/$jar.jar"
done
printf '%s\n' "$cp"

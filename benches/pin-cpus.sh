# Sourced by the benchmark scripts. On machines with two or more CPUs, the server (and SQL run
# in its place) and the load driver get different CPUs, as grpc_bench does; SERVER_CPU and
# DRIVER_CPU override the defaults 1 and 0. Sets pin_server and pin_driver (command prefixes)
# and pin_flags (the matching leadpipe-bench flags); all empty on one CPU.
if [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=${SERVER_CPU:-1}
  DRIVER_CPU=${DRIVER_CPU:-0}
  pin_server=(taskset -c "$SERVER_CPU")
  pin_driver=(taskset -c "$DRIVER_CPU")
  pin_flags=(--pin-server-cpu "$SERVER_CPU" --pin-client-cpu "$DRIVER_CPU")
else
  pin_server=()
  pin_driver=()
  pin_flags=()
fi

# A stand-in for prom/prometheus where no registry is reachable: Debian's prometheus binaries
# (copied from the host, where `make test-compose` installs Debian's package) on the local base.
# Laid out like the official image: /bin/prometheus as entry point, runs as nobody, data in /prometheus.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY prometheus promtool /bin/
RUN install -d -o nobody -g nogroup /prometheus /etc/prometheus
USER nobody
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# mtail from Debian bookworm: the same 3.0.0~rc50 that scripts/test-monitoring.sh runs against
# nginx.mtail (its zero-bucket bug is handled in the program).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends mtail && rm -rf /var/lib/apt/lists/*
EXPOSE 3903
ENTRYPOINT ["mtail"]

# PostgreSQL from Debian's package, for machines that reach no container registry (docker/compose.local.yml
# puts it in place of postgres:16). It takes the settings of the official image that docker-compose.yml
# uses: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, the data folder /var/lib/postgresql/data and the
# scripts in /docker-entrypoint-initdb.d (*.sql, *.sh), run once when the data folder is new.
#
#   docker build --network host -t nnstudy-postgres:local -f docker/postgres.Dockerfile docker
ARG BASE_IMAGE=nnstudy-base:bookworm
FROM ${BASE_IMAGE}

ARG PG_MAJOR=15
# No cluster at install time: the entrypoint makes one in the data folder.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/nnstudy.conf \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "postgresql-$PG_MAJOR" >/dev/null \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

ENV PATH=/usr/lib/postgresql/$PG_MAJOR/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint.sh"]
CMD ["postgres"]

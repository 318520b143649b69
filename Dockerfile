# One image for every Ensemble process: the API (`ensemble serve`) and the scheduler
# (`ensemble worker`). docker-compose.yml picks the command per service.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /tmp/ensemble-src

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
# tzdata (PyPI) is the zoneinfo fallback: Debian slim images ship a partial (or no) system tz
# database, and ENSEMBLE_TIMEZONE and every organization's time zone go through zoneinfo.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt tzdata \
    && rm /tmp/requirements.txt

# The project itself (console script `ensemble`, migrations included as package data).
COPY . .
RUN pip install . \
    && cd / \
    && rm -rf /tmp/ensemble-src

# Run unprivileged. ENSEMBLE_DATA_DIR only matters when DATABASE_URL is unset (the embedded
# development server); it exists and is writable so that path never fails on permissions.
RUN groupadd --system --gid 10001 ensemble \
    && useradd --system --uid 10001 --gid ensemble --home-dir /home/ensemble --create-home \
        --shell /usr/sbin/nologin ensemble \
    && install -d -o ensemble -g ensemble /var/lib/ensemble

ENV ENSEMBLE_DATA_DIR=/var/lib/ensemble
WORKDIR /home/ensemble
USER ensemble:ensemble

EXPOSE 8000

# `ensemble serve` runs `alembic upgrade head` first, serialized across replicas by a PostgreSQL
# advisory lock, so any number of API containers may start at once. Background jobs run in the
# separate worker service, hence --no-scheduler.
CMD ["ensemble", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-scheduler"]

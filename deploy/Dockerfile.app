# The app image: action server, web service, device worker and the bootstrap job (requirements/app.txt).
FROM python:3.10-slim
WORKDIR /app
COPY requirements/app.txt requirements/app.txt
RUN pip install --no-cache-dir -r requirements/app.txt
COPY actions actions
COPY crm_store crm_store
COPY device_hooks device_hooks
COPY web_service web_service
COPY escalation.yml escalation.yml
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 app
USER app

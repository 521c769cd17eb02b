# The vl2v teacher service (and CLI). One image serves CPU and GPU: PyPI's torch wheel carries CUDA.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models

WORKDIR /opt/vl2v
COPY pyproject.toml README.md ./
COPY common ./common
COPY teacher_service ./teacher_service
COPY cache ./cache
COPY student ./student
COPY cli ./cli
RUN pip install ".[postgres]" \
    && useradd --create-home --uid 1000 vl2v \
    && mkdir -p /models /state \
    && chown vl2v:vl2v /models /state

USER vl2v
EXPOSE 8000
# Keys are never baked in: they arrive at run time through VL2V_API_KEYS or VL2V_KEYS_FILE.
CMD ["vl2v", "serve", "--host", "0.0.0.0", "--port", "8000"]

# Production serving image: TensorFlow Serving with an exported keras-advmi model baked in.
#   keras-advmi export model.keras models/robust/1 --detector mahalanobis
#   docker build --build-arg MODEL_DIR=models/robust --build-arg MODEL_NAME=robust -t robust-serving .
#   docker run --rm -p 127.0.0.1:8501:8501 -p 127.0.0.1:8500:8500 robust-serving
# MODEL_DIR: path (in the build context) of BASE/NAME holding VERSION subdirectories.
FROM tensorflow/serving:latest

ARG MODEL_DIR=models/robust
ARG MODEL_NAME=robust
ENV MODEL_NAME=${MODEL_NAME}

COPY ${MODEL_DIR} /models/${MODEL_NAME}
COPY serving/batching.config /config/batching.config
COPY serving/monitoring.config /config/monitoring.config

EXPOSE 8500 8501
# The base image's entrypoint serves /models/${MODEL_NAME}; these flags add batching and metrics.
CMD ["--enable_batching=true", "--batching_parameters_file=/config/batching.config", \
     "--monitoring_config_file=/config/monitoring.config", "--file_system_poll_wait_seconds=1"]

# GPU training image: docker build -t dreamerv2_tf . && docker run --gpus all -v $PWD/runs:/runs dreamerv2_tf
# Trains Atari Pong with the paper's settings in mixed precision; pass other flags after the image
# name, e.g. `docker run --gpus all -v $PWD/runs:/runs dreamerv2_tf --configs defaults dmc_vision
# --task dmc_walker_walk --logdir /runs/walker`.
FROM tensorflow/tensorflow:2.21.0-gpu

# EGL + Mesa for headless DeepMind Control rendering.
RUN apt-get update && apt-get install -y --no-install-recommends \
      libegl1 libegl-mesa0 libgl1-mesa-dri && rm -rf /var/lib/apt/lists/*

WORKDIR /dreamerv2_tf
COPY requirements.txt .
# The base image already has tensorflow 2.21.0 with its CUDA libraries; the pin keeps it.
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN pip install --no-cache-dir --no-deps -e ".[crafter]" && pip install --no-cache-dir crafter==1.8.3

ENV MUJOCO_GL=egl
VOLUME /runs
ENTRYPOINT ["python", "-m", "dreamerv2_tf.train"]
CMD ["--configs", "defaults", "atari", "--task", "atari_pong", "--logdir", "/runs/atari_pong"]

# cohort image: the `cohort` binary (head, agent, CLI, operator), the seed model
# (fashion_mnist + the FashionMNIST data), python/cohort.py and the examples.
#   docker build -t cohort:latest .
# Debian's libtorch is CPU-only: GPU pods get their GPUs scheduled and
# CUDA_VISIBLE_DEVICES set, but training runs on the CPU (see docs/gke.md).

FROM debian:bookworm AS build
WORKDIR /src
COPY scripts/setup scripts/setup
RUN scripts/setup && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOHORT_TESTS=OFF \
 && cmake --build build --target cohort fashion_mnist -j "$(nproc)"

FROM debian:bookworm-slim
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates libcurl4 libssl3 libsqlite3-0 libzip4 libyaml-cpp0.7 \
      libgrpc++1.51 libprotobuf32 \
      libtorch1.13 libopenblas0-pthread \
      python3 dataset-fashion-mnist \
 && update-alternatives --set libblas.so.3-x86_64-linux-gnu \
      /usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 \
 && update-alternatives --set liblapack.so.3-x86_64-linux-gnu \
      /usr/lib/x86_64-linux-gnu/openblas-pthread/liblapack.so.3 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/bin/cohort /src/build/bin/fashion_mnist /usr/local/bin/
# The agent finds cohort.py at <prefix>/share/cohort/python next to <prefix>/bin.
COPY python/ /usr/local/share/cohort/python/
COPY examples/ /usr/local/share/cohort/examples/
RUN groupadd --gid 1000 cohort \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/cohort --shell /bin/bash cohort
ENV PYTHONPATH=/usr/local/share/cohort/python
USER 1000:1000
WORKDIR /home/cohort
EXPOSE 6380 8265 8080
ENTRYPOINT ["cohort"]
CMD ["--help"]

from setuptools import find_packages, setup

setup(
    name="opencood",
    version="0.1.0",
    description="Cooperative 3D perception framework (OpenCOOD/HEAL/GenComm lineage) with a synthetic world",
    license="Apache-2.0",
    packages=find_packages(include=["opencood", "opencood.*"]),
    package_data={"opencood": ["hypes_yaml/**/*.yaml", "hypes_yaml/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "torch", "torchvision", "numpy", "numba", "PyYAML", "tqdm", "tensorboardX", "threadpoolctl",
        "matplotlib", "opencv-python-headless", "pillow",
    ],
    extras_require={"sparse": ["spconv"], "vis": ["open3d"], "geometry": ["shapely"]},
)

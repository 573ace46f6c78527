"""Installs the project so TFX can import the module files by dotted path.

Dependencies are pinned in requirements.lock and installed by scripts/bootstrap.sh; this file
only lists the direct ones, unpinned, for readers and for `pip install -e .` in an existing env.
"""

import setuptools

setuptools.setup(
    name="shoprec",
    version="0.1.0",
    description="A production e-commerce recommender on TFX: pipeline, serving, strategy, experiments.",
    python_requires=">=3.11,<3.12",
    packages=setuptools.find_packages(include=["shoprec*", "components*", "pipeline*", "serving*", "service*",
                                               "experiments*", "ui*"]),
    py_modules=["transform_module", "trainer_module", "ranking_transform_module", "ranking_trainer_module"],
    package_data={"pipeline": ["schema/*.pbtxt"]},
    install_requires=[
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-recommenders==0.7.3",
        "tensorflow-transform==1.16.0",
        "tensorflow-serving-api==2.16.1",
        "apache-beam[gcp]==2.59.0",
        "tqdm",
        "psutil",
    ],
)

"""The Ray entry points (``python -m ray_jobs.<job>``).

Importing the package pins torch's CPU kernel paths to AVX2 (``weaksam.machine``), before any
job's torch runs an operation and before it starts Ray, whose workers inherit the environment
(a cluster's workers get the pins with the job: ``ray_jobs._ray.FORWARDED_ENV``). Trained figures
then do not depend on whether the machine has AVX-512. ``WEAKSAM_CPU_KERNELS=native`` opts out.
"""

from weaksam.machine import pin_cpu_kernels

pin_cpu_kernels()

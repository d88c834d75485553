# C types for app/murmur2.py when it is compiled (Cython reads this file beside the module; see setup.py).
# The module stays plain Python and means the same interpreted: 32-bit unsigned products wrap as its masks do.
import cython

cdef unsigned int _SEED, _M, _MASK

@cython.locals(raw=bytes, length=cython.Py_ssize_t, end=cython.Py_ssize_t, i=cython.Py_ssize_t,
               extra=cython.Py_ssize_t, h=cython.uint, k=cython.uint)
cpdef unsigned int murmur2(data) except? 0

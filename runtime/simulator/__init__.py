"""A stand-in for EVerest's EvseSecurity module: its certificate store on disk, and a test PKI to fill it."""

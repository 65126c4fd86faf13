from .cli import main

# Guarded: a sweep's worker processes are spawned, and spawning imports the parent's main module again.
if __name__ == "__main__":
    main()

"""Process plumbing: start methods, bare forks, lifelines and bounded stops."""

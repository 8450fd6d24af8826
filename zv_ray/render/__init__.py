"""Multi-view rendering: cameras and pose conventions, Plücker rays, headless pyrender, contact sheets."""
